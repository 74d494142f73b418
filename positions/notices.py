"""What a client is told of its positions: opened, partially closed, closed. Written to
the outbox (``signals_app.notify``) in the transaction of the fill or the close-ack.

A client message carries what the client's own broker shows (instrument, direction,
volume, its fill and close prices, P&L) and the reason in client words, derived from
``CLIENT_REASON_FOR``: never an internal reason, a level, a distance to one, a trailing
parameter or the strategy.
"""

from __future__ import annotations

from decimal import Decimal

from core import formatting
from positions.choices import CLIENT_REASON_FOR, CloseReason
from positions.models import CloseCommand, OpenPosition
from signals_app.choices import OutboxTemplate, Side
from signals_app.models import Client
from signals_app.notify.outbox import client_recipients, outbox_message, outbox_write, render

# The generic reasons an EA sees, as a sentence for a person.
CLIENT_WORDS = {
    "risk limit": "risk limit hit",
    "profit target": "profit target reached",
    "time limit": "time limit reached",
    "closed by the desk": "closed by the provider",
    "closed by the provider": "closed by the provider",
}
DEFAULT_CLIENT_WORDS = "closed by the provider"


def client_close_words(reason: str) -> str:
    """The reason for a client: the generic reason EAs see (``CLIENT_REASON_FOR``), as words."""
    generic = CLIENT_REASON_FOR.get(CloseReason(reason)) if reason in CloseReason.values else None
    return CLIENT_WORDS.get(generic or "", DEFAULT_CLIENT_WORDS)


def _notify(
    *, position: OpenPosition, template: OutboxTemplate, event: str, context: dict, close: bool
) -> int:
    """``context`` is formatted for people already (``core.formatting``: prices at the
    instrument's digits, money in its quote currency, lots)."""
    client = Client.objects.get(pk=position.client_id)
    recipients = client_recipients(client, close=close)
    if not recipients:
        return 0
    rendered = render(
        template,
        {
            "client": client.name,
            "symbol": position.instrument.symbol,
            "direction": Side(position.side).label,
            "ticket": position.broker_ticket,
            **context,
        },
    )
    return outbox_write(
        outbox_message(
            recipient=recipient,
            template=template,
            rendered=rendered,
            dedupe_key=f"position:{position.pk}:{event}:{recipient.channel}",
        )
        for recipient in recipients
    )


def position_opened_notice(*, position: OpenPosition) -> int:
    return _notify(
        position=position,
        template=OutboxTemplate.POSITION_OPENED,
        event="opened",
        context={
            "volume": formatting.volume(position.volume),
            "entry_price": formatting.price(position.entry_price, position.instrument.digits),
        },
        close=False,
    )


def position_close_notice(
    *,
    position: OpenPosition,
    command: CloseCommand,
    close_price: Decimal,
    closed_volume: Decimal,
    pnl: Decimal,
    total_pnl: Decimal,
    remaining_volume: Decimal,
) -> int:
    """A close-ack applied: the position is closed (``remaining_volume`` 0, the whole
    position's P&L) or partially closed (this part's P&L and what is still open)."""
    fully_closed = remaining_volume == 0
    instrument = position.instrument
    return _notify(
        position=position,
        template=OutboxTemplate.POSITION_CLOSED if fully_closed else OutboxTemplate.POSITION_PARTIALLY_CLOSED,
        event=f"close:{command.pk}",
        context={
            "reason": client_close_words(command.reason),
            "close_price": formatting.price(close_price, instrument.digits),
            "closed_volume": formatting.volume(closed_volume),
            "remaining_volume": formatting.volume(remaining_volume),
            "pnl": formatting.money(total_pnl if fully_closed else pnl, instrument.quote_currency),
        },
        close=True,
    )
