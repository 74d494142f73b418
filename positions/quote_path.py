"""Every quote counts: the path of accepted quotes per instrument since the sweeps
last looked, so a level crossed inside a feed batch, or by a quote between two
sweeps that the next one no longer shows (a wick), is still judged.

``positions.quotes`` appends each quote that was fresh on arrival (a stale one
never counts), numbered and flagged when it jumped beyond the spike limit. A
sweep, under its instrument's lock:

1. reads the whole path (``path_read``);
2. keeps what may be judged (``path_judgeable``): a spike counts only once the
   next quote confirms it (does not jump away again); an unconfirmed spike at
   the end waits in the path for its successor; a spike the next quote
   contradicts is dropped; a quote the market guard flagged (an abnormal
   spread or a gap, ``positions.market_guard``) is never judged;
3. walks every watched signal's plan through it (``positions.exit_plan``);
4. after its transaction commits, removes what it consumed (``path_trim``).
   A sweep that dies before trimming leaves the quotes for the next one; the
   plans' ``last_seq`` makes re-reading them harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from core.redis import get_redis
from positions.exit_plan import PathQuote
from positions.quotes import PATH_KEY

# Pops from the head while the head's seq is at most ARGV[1]; returns how many went.
_TRIM = """
local removed = 0
while true do
    local head = redis.call('LINDEX', KEYS[1], 0)
    if not head then break end
    if tonumber(string.match(head, '^(%d+)')) > tonumber(ARGV[1]) then break end
    redis.call('LPOP', KEYS[1])
    removed = removed + 1
end
return removed
"""


@dataclass(frozen=True)
class PathEntry:
    quote: PathQuote
    spike: bool
    anomaly: str = ""  # the market guard's flag


@dataclass(frozen=True)
class JudgeablePath:
    quotes: list[PathQuote]
    consumed_seq: int | None  # trim up to here after the commit; None: nothing to trim
    dropped_spikes: list[PathQuote]
    held_spike: bool  # the last quote is a spike waiting for its confirmation
    anomalies: list[tuple[PathQuote, str]] = field(default_factory=list)  # flagged: never judged
    last_spike: bool = False  # the latest quote jumped beyond the spike limit (flagged or not)


def _parse(raw: bytes) -> PathEntry:
    seq, bid, ask, ts, received_at, spike, *flag = raw.decode().split("|")
    return PathEntry(
        PathQuote(
            seq=int(seq), bid=Decimal(bid), ask=Decimal(ask), ts=float(ts), received_at=float(received_at)
        ),
        spike=spike == "1",
        anomaly=flag[0] if flag else "",
    )


def paths_read(symbols: list[str]) -> dict[str, list[PathEntry]]:
    """The path of each instrument, oldest first, in one round trip."""
    pipeline = get_redis().pipeline(transaction=False)
    for symbol in symbols:
        pipeline.lrange(PATH_KEY.format(symbol=symbol), 0, -1)
    return {
        symbol: [_parse(raw) for raw in entries]
        for symbol, entries in zip(symbols, pipeline.execute(), strict=True)
    }


def path_judgeable(entries: list[PathEntry]) -> JudgeablePath:
    quotes: list[PathQuote] = []
    dropped: list[PathQuote] = []
    anomalies: list[tuple[PathQuote, str]] = []
    consumed = 0
    held = False
    for index, entry in enumerate(entries):
        if entry.anomaly:
            anomalies.append((entry.quote, entry.anomaly))
        elif entry.spike:
            if index + 1 == len(entries):
                held = True  # its confirmation has not arrived yet: it stays in the path
                break
            if entries[index + 1].spike:
                dropped.append(entry.quote)  # the next quote jumped away again: a lone spike
            else:
                quotes.append(entry.quote)
        else:
            quotes.append(entry.quote)
        consumed = index + 1
    return JudgeablePath(
        quotes=quotes,
        consumed_seq=entries[consumed - 1].quote.seq if consumed else None,
        dropped_spikes=dropped,
        held_spike=held,
        anomalies=anomalies,
        last_spike=bool(entries) and entries[-1].spike,
    )


def paths_trim(consumed: dict[str, int]) -> None:
    if not consumed:
        return
    redis = get_redis()
    trim = redis.register_script(_TRIM)
    pipeline = redis.pipeline(transaction=False)
    for symbol, seq in consumed.items():
        trim(keys=[PATH_KEY.format(symbol=symbol)], args=[seq], client=pipeline)
    pipeline.execute()
