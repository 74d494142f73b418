"""Telegram's limits, shared by every worker through Redis: about one message a second
per chat and 30 a second in all; a 429's ``retry_after`` holds its chat that long."""

from __future__ import annotations

from core.redis import get_redis, get_script

CHAT_INTERVAL_MS = 1000
GLOBAL_PER_SECOND = 30
_CHAT_KEY = "veilstop:notify:telegram:chat:{chat_id}"
_GLOBAL_KEY = "veilstop:notify:telegram:second"

# Returns 0 and takes a slot, or the milliseconds to wait for one. Redis' clock, so every
# worker counts the same second.
_TAKE_SLOT = """
local wait = redis.call('PTTL', KEYS[1])
if wait > 0 then return wait end
local now = redis.call('TIME')
local second_key = KEYS[2] .. ':' .. now[1]
local sent = tonumber(redis.call('GET', second_key) or '0')
if sent >= tonumber(ARGV[2]) then return math.max(1, 1000 - math.floor(tonumber(now[2]) / 1000)) end
redis.call('INCR', second_key)
redis.call('PEXPIRE', second_key, 2000)
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 0
"""


def telegram_slot_wait(chat_id: str) -> float:
    """Take a sending slot for ``chat_id``: 0.0, or the seconds until one is free."""
    waited = get_script(_TAKE_SLOT)(
        keys=[_CHAT_KEY.format(chat_id=chat_id), _GLOBAL_KEY], args=[CHAT_INTERVAL_MS, GLOBAL_PER_SECOND]
    )
    return int(waited) / 1000


def telegram_chat_hold(chat_id: str, seconds: float) -> None:
    """Telegram asked to wait (429): no message to this chat for ``seconds``."""
    if seconds > 0:
        get_redis().set(_CHAT_KEY.format(chat_id=chat_id), 1, px=max(1, int(seconds * 1000)))
