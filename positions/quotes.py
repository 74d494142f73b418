"""The owner's latest bid/ask per instrument, in Redis.

A quote replaces the stored one only if it is newer (compare-and-set in one
Lua script), so batches arriving out of order never move the price back.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from config.redis import get_redis

KEY = "veilstop:quote:{symbol}"

# KEYS[1] = quote hash; ARGV = bid, ask, ts, received_at. Returns 1 if stored.
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'ts')
if current and tonumber(current) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('HSET', KEYS[1], 'bid', ARGV[1], 'ask', ARGV[2], 'ts', ARGV[3], 'received_at', ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Quote:
    instrument: str
    bid: Decimal
    ask: Decimal
    ts: float  # when the price was quoted (unix seconds, the feed's clock)
    received_at: float = 0.0

    def as_json(self) -> dict[str, str | float]:
        return {"instrument": self.instrument, "bid": str(self.bid), "ask": str(self.ask), "ts": self.ts}


def quote_store(quote: Quote, *, received_at: float) -> bool:
    """Store ``quote`` if it is newer than the one held; return whether it was."""
    stored = get_redis().eval(
        _SET_IF_NEWER,
        1,
        KEY.format(symbol=quote.instrument),
        str(quote.bid),
        str(quote.ask),
        repr(quote.ts),
        repr(received_at),
    )
    return bool(stored)


def quote_latest(instrument: str) -> Quote | None:
    raw = get_redis().hgetall(KEY.format(symbol=instrument))
    if not raw:
        return None
    return Quote(
        instrument=instrument,
        bid=Decimal(raw[b"bid"].decode()),
        ask=Decimal(raw[b"ask"].decode()),
        ts=float(raw[b"ts"]),
        received_at=float(raw[b"received_at"]),
    )
