"""The `make run` demo: the whole loop on real market data, through the real APIs.

* a price feed replays real EURUSD history (shipped in the backtesting package)
  into POST /api/v1/feed/quotes, signed with a feed key;
* a strategy bot publishes a EURUSD signal every --signal-every seconds through
  POST /api/v1/signals, with hidden levels a few pips around the market;
* three client EAs run the reference client (ea_client) on simulated brokers
  that see the same market: they poll, fill, acknowledge, and execute the close
  commands the scanner queues when a hidden level is crossed.

Nothing here shortcuts the server: every step is an HTTP call a real feed, bot
or EA would make. Stop it with Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import json
import logging
import signal as signals
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from config.embedded import default_state_dir
from ea_client.client import EAClient
from ea_client.executors import SimulatedBroker
from ea_client.store import ExecutedStore
from ea_client.transport import SignedTransport
from ea_gateway.choices import DeviceRole
from ea_gateway.models import Device
from ea_gateway.services import IssuedCredentials, device_create, device_rotate_secret
from monitoring.notifications.standin import STANDIN_TOKEN
from positions.quotes import quote_latest
from positions.replay import resolve, ticks
from signals_app.events import Actor
from signals_app.models import Client
from signals_app.services import client_ensure

logger = logging.getLogger("demo")
SYMBOL = "EURUSD"
PIP = Decimal("0.0001")
# name, default volume, and the made-up Telegram chat each has while messages go to the
# local Bot API stand-in (`make run` without a TELEGRAM_BOT_TOKEN).
CLIENTS = [
    ("demo-alice", Decimal("0.10"), "100001"),
    ("demo-bob", Decimal("0.20"), "100002"),
    ("demo-carol", Decimal("0.05"), "100003"),
]


def demo_clients(*, by: Actor) -> list[Client]:
    """The demo's clients, created if missing. While Telegram messages go to the local
    stand-in, each has its made-up chat there; with a real bot, which would only refuse
    them, a made-up chat left from a stand-in run is removed (a chat linked with a code stays)."""
    standin = settings.TELEGRAM_BOT_TOKEN == STANDIN_TOKEN
    clients = []
    for name, volume, chat_id in CLIENTS:
        client, _ = client_ensure(
            name=name,
            auto_approve=True,
            default_volume=volume,
            telegram_chat_id=chat_id if standin else None,
            by=by,
        )
        if not standin and client.telegram_chat_id == chat_id:
            client, _ = client_ensure(name=name, telegram_chat_id="", by=by)
        clients.append(client)
    return clients


def _credentials(*, name: str, role: str, client, by: Actor) -> IssuedCredentials:
    """The demo's own device, with a fresh secret (shown to nobody but this process)."""
    device = Device.objects.filter(name=name, role=role, revoked_at__isnull=True).first()
    if device is None:
        return device_create(name=name, role=role, client=client, by=by)
    return device_rotate_secret(device=device, by=by)


def _wait_for_server(server: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            urllib.request.urlopen(f"{server}/healthz", timeout=2)  # noqa: S310 - our own server
            return
        except urllib.error.HTTPError:
            return  # 503 still means the web process answers
        except OSError:
            time.sleep(1)


class Command(BaseCommand):
    help = "Run the demo: a replayed EURUSD feed, a strategy bot and three simulated EAs."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--server", default="http://127.0.0.1:8000")
        parser.add_argument("--tick-seconds", type=float, default=0.5, help="real seconds between feed ticks")
        parser.add_argument("--signal-every", type=float, default=20.0, help="seconds between new signals")

    def handle(self, *args, server: str, tick_seconds: float, signal_every: float, **options) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s demo %(message)s")
        stop = threading.Event()
        for stop_signal in (signals.SIGINT, signals.SIGTERM):
            signals.signal(stop_signal, lambda *_: stop.set())
        by = Actor.system("demo")

        feed = _credentials(name="demo feed", role=DeviceRole.FEED, client=None, by=by)
        eas = []
        for client in demo_clients(by=by):
            eas.append(_credentials(name=f"{client.name} EA", role=DeviceRole.EA, client=client, by=by))
        bot_user, _ = get_user_model().objects.get_or_create(username="demo-bot", defaults={"is_staff": True})
        token = Token.objects.get_or_create(user=bot_user)[0].key

        _wait_for_server(server, stop)
        threads = [
            threading.Thread(target=self._feed, args=(server, feed, tick_seconds, stop), name="feed"),
            threading.Thread(target=self._bot, args=(server, token, signal_every, stop), name="bot"),
        ]
        # Each EA's broker account and executed ids are kept in the state directory, like the
        # server's data: a second `make run` goes on with the same accounts, where ticket
        # numbers continue (a broker never gives a ticket twice; the server refuses a
        # ticket it already knows for the device).
        state = default_state_dir() / "demo"
        state.mkdir(parents=True, exist_ok=True)
        for credentials in eas:
            key = credentials.device.key_id
            client = EAClient(
                SignedTransport(server, key, credentials.secret),
                SimulatedBroker(price_source=_market_price, state_path=state / f"{key}.broker.json"),
                logger=logging.getLogger(f"demo.{credentials.device.name}"),
                store=ExecutedStore(state / f"{key}.executed.sqlite"),
            )
            threads.append(
                threading.Thread(target=client.run_forever, args=(1.0, stop), name=credentials.device.name)
            )
        for thread in threads:
            thread.start()
        self.stdout.write(f"demo running against {server}: feed, bot and {len(eas)} EAs (Ctrl-C stops)")
        while not stop.is_set():
            stop.wait(1)
        for thread in threads:
            thread.join(10)

    def _feed(
        self, server: str, credentials: IssuedCredentials, tick_seconds: float, stop: threading.Event
    ) -> None:
        transport = SignedTransport(server, credentials.device.key_id, credentials.secret)
        path = resolve("backtesting:EURUSD")
        while not stop.is_set():
            for tick in ticks(path, spread=PIP):
                if stop.wait(tick_seconds):
                    return
                quote = {"instrument": SYMBOL, "bid": str(tick.bid), "ask": str(tick.ask), "ts": time.time()}
                try:
                    transport.request("POST", "/api/v1/feed/quotes", body={"quotes": [quote]})
                except Exception:
                    logger.exception("feed: quote not delivered")

    def _bot(self, server: str, token: str, every: float, stop: threading.Event) -> None:
        side, published = "buy", 0
        while not stop.wait(every):
            market = _market_price(SYMBOL)
            if market is None:
                continue
            bid, ask = market
            entry = ask if side == "buy" else bid
            direction = 1 if side == "buy" else -1
            body = {
                "instrument": SYMBOL,
                "side": side,
                "entry_price": str(entry),
                "ttl_minutes": 5,
                "payload": {"timeframe": "H1", "source": "demo"},
                "owner_only": _demo_plan(published, entry=entry, direction=direction),
            }
            request = urllib.request.Request(  # noqa: S310 - our own server
                f"{server}/api/v1/signals",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    logger.info("bot: published signal #%s (%s %s)", json.load(response)["id"], side, SYMBOL)
            except OSError as error:
                logger.warning("bot: signal not published: %s", error)
            side = "sell" if side == "buy" else "buy"
            published += 1


def _demo_plan(index: int, *, entry: Decimal, direction: int) -> dict:
    """Every kind of exit in turn: plain levels; a partial take-profit with breakeven; a
    trailing stop; a time exit."""
    plan: dict = {
        "sl": str(entry - direction * 12 * PIP),
        "tp": str(entry + direction * 15 * PIP),
        "strategy": "demo",
    }
    kind = index % 4
    if kind == 1:
        plan["partial_take_profits"] = [{"price": str(entry + direction * 7 * PIP), "fraction": "0.5"}]
        plan["breakeven"] = {"trigger_pips": "6", "offset_pips": "1"}
    elif kind == 2:
        plan["trailing"] = {"distance_pips": "6", "activation_pips": "5"}
    elif kind == 3:
        plan["max_holding_minutes"] = 2
    return plan


def _market_price(symbol: str) -> tuple[Decimal, Decimal] | None:
    """What the simulated brokers and the bot see: the owner's latest quote."""
    quote = quote_latest(symbol)
    return None if quote is None else (quote.bid, quote.ask)
