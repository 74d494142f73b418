"""The owner's live book: per position, per signal and per client, the latest quote of the
owner's feed, the floating P&L and the distance to each level of the exit plan.

Owner only. A distance to a level reveals the level, so whoever shows any of this checks
``signals_app.view_hidden_levels`` first; the prices and the P&L go with the distances
(one rule for the whole book, simpler to keep than to split).

Bounded reads, whatever the number of positions:

1. the caller's query for its positions (a changelist page), or one grouped query over
   the live positions (per signal, per client and instrument: the database sums);
2. one query for the plans of the signals involved: the levels (decrypted once per
   signal, never per position) and the plan's live state (``SignalPlan``);
3. one Redis round trip for the latest quote of every instrument involved
   (``positions.quotes.quotes_latest``);
4. the arithmetic, in ``positions.live_rules``.

The clients' figures add the risk guards' own reads (``guards_status_clients``: a fixed
handful of queries, as the guards page makes).

A missing quote (or Redis unreachable) gives "no quote", a signal whose levels do not
decrypt or parse gives "levels unreadable": never an error page. Nothing is written.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import connection
from django.db.models import Count, DecimalField, F, Sum
from redis.exceptions import RedisError

from positions.choices import LIVE_STATUSES
from positions.exit_plan import PLAN_UNWALKABLE, ExitPlan, PlanState
from positions.guards.selectors import guards_status_clients
from positions.live_rules import PlanView, book_pnl, floating_pnl, plan_view
from positions.market_guard import quote_age
from positions.models import OpenPosition, SignalPlan
from positions.quotes import quotes_latest
from positions.rules import closing_price
from positions.watched import exit_plan
from signals_app.hidden_levels import HiddenLevelsError, parse_hidden_levels
from signals_app.models import Signal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuoteView:
    bid: Decimal
    ask: Decimal
    age_seconds: float  # as the stale rule measures it (positions.market_guard.quote_age)
    stale: bool  # older than QUOTE_MAX_AGE_SECONDS: breaches are not judged on it


@dataclass(frozen=True)
class PositionLive:
    quote: QuoteView | None
    pnl: Decimal | None  # None without a quote
    plan: PlanView | None  # None: the signal's levels do not decrypt or parse


@dataclass(frozen=True)
class SignalLive:
    signal_id: int
    symbol: str
    side: str
    digits: int
    currency: str
    positions: int
    volume: Decimal
    quote: QuoteView | None
    pnl: Decimal | None
    plan: PlanView | None


@dataclass
class ClientLive:
    client_id: int
    name: str
    guard_state: str = ""  # armed, tripped, stale; "" without an account
    equity: Decimal | None = None  # the accounts' sum, in their own currency (EAs report none)
    peak: Decimal | None = None
    drawdown_percent: Decimal | None = None  # the worst account's
    daily_loss_percent: Decimal | None = None
    drawdown_limit_percent: Decimal | None = None
    daily_loss_limit_percent: Decimal | None = None
    equity_at: datetime | None = None  # when the newest accepted heartbeat equity arrived
    positions: int = 0
    pnl: dict[str, Decimal] = field(default_factory=dict)  # per quote currency: never converted
    unpriced: int = 0  # live positions without a quote, left out of ``pnl``


def quotes_read(symbols: set[str], *, now: float) -> dict[str, QuoteView]:
    """The latest quote of each instrument, in one round trip; none while Redis is down."""
    try:
        latest = quotes_latest(sorted(symbols)) if symbols else {}
    except RedisError as error:
        logger.warning("live book: Redis unreachable, no quotes: %s", error)
        return {}
    views = {}
    for symbol, quote in latest.items():
        age = quote_age(quote, now)
        views[symbol] = QuoteView(quote.bid, quote.ask, age, age > settings.QUOTE_MAX_AGE_SECONDS)
    return views


# The levels and the plan's state of some signals in one read; decrypted row by row below,
# so one signal whose token no key opens does not hide the others.
_PLANS = """
SELECT s.id, s.side, s.entry_price, s.owner_only, i.pip_size, sp.state
  FROM signals_app_signal s
  JOIN signals_app_instrument i ON i.id = s.instrument_id
  LEFT JOIN positions_signalplan sp ON sp.signal_id = s.id
 WHERE s.id = ANY(%s)
"""


def plans_read_live(signal_ids: set[int]) -> dict[int, tuple[ExitPlan, PlanState, Decimal] | None]:
    """Per signal: its plan in prices, the plan's live state and the pip size; None when
    the levels or the state do not decrypt or parse. The trailing distance is left out:
    the stop it moved is in the state, and this page only reads where the stop is."""
    if not signal_ids:
        return {}
    levels_field = Signal._meta.get_field("owner_only")
    state_field = SignalPlan._meta.get_field("state")
    with connection.cursor() as cursor:
        cursor.execute(_PLANS, [sorted(signal_ids)])
        rows = cursor.fetchall()
    plans: dict[int, tuple[ExitPlan, PlanState, Decimal] | None] = dict.fromkeys(signal_ids)
    for signal_id, side, entry, owner_only, pip_size, state in rows:
        try:
            levels = parse_hidden_levels(levels_field.from_db_value(owner_only, None, connection))
            plan = exit_plan(levels, side=side, entry=entry, pip_size=pip_size)
            stored = None if state is None else state_field.from_db_value(state, None, connection)
            plans[signal_id] = (plan, PlanState.from_json(stored), pip_size)
        except (InvalidToken, HiddenLevelsError, *PLAN_UNWALKABLE):
            plans[signal_id] = None  # the scanner alerts on such a signal; the page says so
    return plans


def _view(plan_row, *, side: str, quote: QuoteView | None) -> PlanView | None:
    if plan_row is None:
        return None
    plan, state, pip_size = plan_row
    price = None if quote is None else closing_price(side=side, bid=quote.bid, ask=quote.ask)
    try:
        return plan_view(plan, state, price=price, pip_size=pip_size)
    except PLAN_UNWALKABLE:
        return None


def positions_live(positions: list[OpenPosition], *, now: float | None = None) -> dict[int, PositionLive]:
    """The live figures of these positions (with their ``instrument`` loaded), for those
    still held at the broker (open, closing, close failed): one query, one round trip."""
    now = time.time() if now is None else now
    live = [position for position in positions if position.status in LIVE_STATUSES]
    quotes = quotes_read({position.instrument.symbol for position in live}, now=now)
    plans = plans_read_live({position.signal_id for position in live})
    result = {}
    for position in live:
        instrument = position.instrument
        quote = quotes.get(instrument.symbol)
        pnl = None
        if quote is not None:
            pnl = floating_pnl(
                side=position.side,
                entry=position.entry_price,
                volume=position.remaining_volume,
                contract_size=instrument.contract_size,
                bid=quote.bid,
                ask=quote.ask,
            )
        plan = _view(plans.get(position.signal_id), side=position.side, quote=quote)
        result[position.pk] = PositionLive(quote=quote, pnl=pnl, plan=plan)
    return result


_VOLUME = Sum("remaining_volume")
_ENTRY_VOLUME = Sum(F("entry_price") * F("remaining_volume"), output_field=DecimalField())


def signals_live(*, limit: int, now: float | None = None) -> list[SignalLive]:
    """Every signal with live positions (the most recent ``limit``), its book summed."""
    now = time.time() if now is None else now
    rows = list(
        OpenPosition.objects.filter(status__in=LIVE_STATUSES)
        .values(
            "signal_id",
            "side",
            "instrument__symbol",
            "instrument__digits",
            "instrument__contract_size",
            "instrument__quote_currency",
        )
        .annotate(positions=Count("pk"), volume=_VOLUME, entry_volume=_ENTRY_VOLUME)
        .order_by("-signal_id")[:limit]
    )
    quotes = quotes_read({row["instrument__symbol"] for row in rows}, now=now)
    plans = plans_read_live({row["signal_id"] for row in rows})
    signals = []
    for row in rows:
        quote = quotes.get(row["instrument__symbol"])
        pnl = None if quote is None else _row_pnl(row, quote)
        signals.append(
            SignalLive(
                signal_id=row["signal_id"],
                symbol=row["instrument__symbol"],
                side=row["side"],
                digits=row["instrument__digits"],
                currency=row["instrument__quote_currency"],
                positions=row["positions"],
                volume=row["volume"],
                quote=quote,
                pnl=pnl,
                plan=_view(plans.get(row["signal_id"]), side=row["side"], quote=quote),
            )
        )
    return signals


def clients_live(*, now: float | None = None) -> list[ClientLive]:
    """Every client with live positions or an account its EAs report: the guards' figures
    (``positions.guards.selectors``: equity and peak summed over its accounts, drawdown and
    daily loss its worst account's) and the floating P&L of its live positions, per
    currency."""
    now = time.time() if now is None else now
    books = list(
        OpenPosition.objects.filter(status__in=LIVE_STATUSES)
        .values(
            "client_id",
            "client__name",
            "side",
            "instrument__symbol",
            "instrument__contract_size",
            "instrument__quote_currency",
        )
        .annotate(positions=Count("pk"), volume=_VOLUME, entry_volume=_ENTRY_VOLUME)
        .order_by()
    )
    quotes = quotes_read({row["instrument__symbol"] for row in books}, now=now)
    clients: dict[int, ClientLive] = {}
    for status in guards_status_clients():
        if status["accounts"]:
            latest = max(account["equity_at"] for account in status["accounts"])
            clients[status["client_id"]] = ClientLive(
                client_id=status["client_id"],
                name=status["client"],
                guard_state=status["state"],
                equity=status["equity"],
                peak=status["peak"],
                drawdown_percent=status["drawdown_percent"],
                daily_loss_percent=status["daily_loss_percent"],
                drawdown_limit_percent=status["drawdown_limit_percent"],
                daily_loss_limit_percent=status["daily_loss_limit_percent"],
                equity_at=latest,
            )
    pnl: dict[int, dict[str, Decimal]] = defaultdict(dict)
    for row in books:
        client = clients.get(row["client_id"])
        if client is None:
            client = clients[row["client_id"]] = ClientLive(row["client_id"], row["client__name"])
        client.positions += row["positions"]
        quote = quotes.get(row["instrument__symbol"])
        if quote is None:
            client.unpriced += row["positions"]
            continue
        currency = row["instrument__quote_currency"]
        amount = _row_pnl(row, quote)
        pnl[client.client_id][currency] = pnl[client.client_id].get(currency, Decimal(0)) + amount
    for client_id, amounts in pnl.items():
        clients[client_id].pnl = dict(sorted(amounts.items()))
    return sorted(clients.values(), key=lambda client: (client.name, client.client_id))


def _row_pnl(row: dict, quote: QuoteView) -> Decimal:
    """The floating P&L of one summed row (a signal's or a client's positions of one
    instrument and side), valued on the quote."""
    return book_pnl(
        side=row["side"],
        volume=row["volume"],
        entry_volume=row["entry_volume"],
        contract_size=row["instrument__contract_size"],
        bid=quote.bid,
        ask=quote.ask,
    )
