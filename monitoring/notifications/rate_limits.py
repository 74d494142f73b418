"""Telegram's limits, shared by every worker through Redis: about one message a second
per chat and 30 a second in all; a 429's ``retry_after`` holds its chat that long."""

from __future__ import annotations

from core.redis import get_script

CHAT_INTERVAL_MS = 1000
GLOBAL_PER_SECOND = 30
_CHAT_KEY = "veilstop:notify:telegram:chat:{chat_id}"
_GLOBAL_KEY = "veilstop:notify:telegram:all"

# Each key holds the earliest time (Redis' clock, ms) its next message may go: a message
# goes when both the chat's and the global one have come, and moves them one interval on
# (a chat: one a second; all chats: one every 1/30 s, so no second ever holds more than 30
# sends, wherever it starts). Returns 0 and takes the slot, or the milliseconds to wait.
_TAKE_SLOT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local chat_at = tonumber(redis.call('GET', KEYS[1]) or '0')
local all_at = tonumber(redis.call('GET', KEYS[2]) or '0')
local wait = math.max(chat_at - now, all_at - now, 0)
if wait > 0 then return wait end
local chat_interval = tonumber(ARGV[1])
local all_interval = tonumber(ARGV[2])
redis.call('SET', KEYS[1], now + chat_interval, 'PX', chat_interval + 1000)
redis.call('SET', KEYS[2], now + all_interval, 'PX', all_interval + 1000)
return 0
"""
_HOLD = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local until_at = now + tonumber(ARGV[1])
if until_at > tonumber(redis.call('GET', KEYS[1]) or '0') then
    redis.call('SET', KEYS[1], until_at, 'PX', tonumber(ARGV[1]) + 1000)
end
return 0
"""


def telegram_slot_wait(chat_id: str) -> float:
    """Take a sending slot for ``chat_id``: 0.0, or the seconds until one may be free."""
    waited = get_script(_TAKE_SLOT)(
        keys=[_CHAT_KEY.format(chat_id=chat_id), _GLOBAL_KEY],
        args=[CHAT_INTERVAL_MS, max(1, 1000 // GLOBAL_PER_SECOND + (1000 % GLOBAL_PER_SECOND > 0))],
    )
    return int(waited) / 1000


def telegram_chat_hold(chat_id: str, seconds: float) -> None:
    """Telegram asked to wait (429): no message to this chat for ``seconds``."""
    if seconds > 0:
        get_script(_HOLD)(keys=[_CHAT_KEY.format(chat_id=chat_id)], args=[max(1, int(seconds * 1000))])
