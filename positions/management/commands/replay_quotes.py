from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from core.errors import DomainError
from positions.quotes import Quote, quotes_ingest
from positions.replay import ReplayError, resolve, ticks
from signals_app.models import Instrument


class Command(BaseCommand):
    help = (
        "Replay market data as the owner's price feed: each tick is stored as the latest quote "
        "(stamped now) and sweeps the scanner, exactly as POST /api/v1/feed/quotes does. "
        "FILE is a CSV (time + open/high/low/close, or time + bid/ask) or backtesting:EURUSD / "
        "backtesting:BTCUSD for real history shipped in the backtesting package."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file")
        parser.add_argument("--instrument", required=True, help="symbol the prices are for, e.g. EURUSD")
        parser.add_argument(
            "--speed", type=float, default=60.0, help="market seconds per real second (default 60)"
        )
        parser.add_argument(
            "--max-interval", type=float, default=1.0, help="longest real pause between ticks"
        )
        parser.add_argument("--spread-pips", default="1", help="ask = bid + this many pips (OHLC files)")
        parser.add_argument("--limit", type=int, default=0, help="stop after this many ticks (0: all)")
        parser.add_argument("--loop", action="store_true", help="start again at the end of the file")

    def handle(
        self,
        *args,
        file: str,
        instrument: str,
        speed: float,
        max_interval: float,
        spread_pips: str,
        limit: int,
        loop: bool,
        **options,
    ) -> None:
        symbol = instrument.strip().upper()
        found = Instrument.objects.filter(symbol=symbol, active=True).first()
        if found is None:
            raise CommandError(f"unknown instrument {symbol!r}")
        if speed <= 0 or max_interval < 0:
            raise CommandError("--speed must be positive and --max-interval not negative")
        try:
            spread = (Decimal(spread_pips) * found.pip_size).normalize()
            path = resolve(file)
        except (InvalidOperation, ReplayError) as error:
            raise CommandError(str(error) or "--spread-pips must be a number") from None

        sent = 0
        while True:
            previous_at, step = None, 0.0
            try:
                for tick in ticks(path, spread=spread):
                    if previous_at is not None and tick.at != previous_at:
                        # A bar's four ticks share its time: spread them over the gap to the last bar.
                        step = max((tick.at - previous_at).total_seconds(), 0.0) / 4 / speed
                    previous_at = tick.at
                    time.sleep(min(step, max_interval))
                    quotes_ingest(quotes=[Quote(symbol, tick.bid, tick.ask, time.time())])
                    sent += 1
                    if limit and sent >= limit:
                        self.stdout.write(f"replayed {sent} ticks of {symbol}")
                        return
            except (ReplayError, DomainError) as error:
                raise CommandError(str(error)) from None
            if not loop:
                self.stdout.write(f"replayed {sent} ticks of {symbol}")
                return
