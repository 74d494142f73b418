"""Step 4 of EA authentication (``ea_gateway.api.authentication``): the one Redis round
trip that admits a verified request, and the replay fence's PostgreSQL write when that
round trip asks for it.

The replay fence compares the Redis server's identity, ``run_id:master_replid:epoch``,
read by the script itself: the run id is new on every start, the replication id on every
promotion, and the epoch is a marker key (``EPOCH_KEY``, no TTL, in the nonces' own db)
that the script creates, with a token fresh for each request, whenever it is missing. So
a FLUSHDB, a FLUSHALL, a deleted marker or one evicted with the nonces (``allkeys-*``)
changes the identity as a restart does, and the fence refuses what may be a replay. An
eviction that drops nonces and keeps the marker (``volatile-*``: the marker has no TTL)
goes unseen: Redis must not evict (``maxmemory-policy noeviction``; ``ea_gateway.checks``
reports any other, docs/operations.md says why).
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings

from core.redis import get_script
from core.wake import database_scope, generation_key, marker_key
from ea_gateway.api.throttling import device_rate
from ea_gateway.selectors import DEVICE_GENERATION_KEY, DeviceEntry
from ea_gateway.services import replay_fence_raise
from ea_gateway.wake import pending_check

logger = logging.getLogger(__name__)

NONCE_KEY = "veilstop:nonce:{device}:{nonce}"
THROTTLE_KEY = "veilstop:throttle:{device}"
LAST_SEEN_KEY = "veilstop:last-seen:{device}"
FENCE_KEY = "veilstop:replay-fence:{device}"
EPOCH_KEY = "veilstop:redis-epoch"
LAST_SEEN_RESOLUTION_SECONDS = 10
# The round trip is tried again after a raise of the fence at most this many times.
MAX_FENCE_READS = 3

# KEYS: generation, nonce, throttle log, last-seen mark, replay fence, epoch marker; for a
# view that answers without waiting, also its wake generation and "nothing pending" marker
# (ea_gateway.wake, step 1).
# ARGV: generation the device was read under, nonce TTL (s), requests allowed, window (ms),
# last-seen resolution (s), the request's timestamp, (after a {3}: '' before) the server
# identity it named with the device's ReplayFence floor and bound for it, and a new epoch
# for the marker should it be missing.
# Returns {0, generation} (stale: nothing consumed), {1} (nonce replayed), {3, identity}
# (the durable bound is needed: nothing consumed), {4, floor} (fenced: signed at or below
# the bound found after Redis lost data) or
# {2, retry_after_ms (0: allowed), last_seen_free (1/0)[, wake generation, marker, marker PTTL]}.
# The throttle is DRF's sliding log: the times (Redis clock, ms) of the requests allowed
# in the last window, newest first; a request beyond the limit is refused until the oldest
# leaves the window, and is not logged.
ADMIT = """
local generation = redis.call('GET', KEYS[1]) or ''
if generation ~= ARGV[1] then
  return {0, generation}
end
local epoch = redis.call('GET', KEYS[6])
if not epoch then
  epoch = ARGV[10]
  redis.call('SET', KEYS[6], epoch)
end
local server = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') .. ':' ..
  string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') .. ':' .. epoch
local fence = redis.call('HMGET', KEYS[5], 'server', 'floor', 'bound')
local floor, bound = tonumber(fence[2]), tonumber(fence[3])
if ARGV[7] == server then
  floor = tonumber(ARGV[8])
  bound = math.max(fence[1] == server and bound or 0, tonumber(ARGV[9]))
  redis.call('HSET', KEYS[5], 'server', server,
             'floor', string.format('%.0f', floor), 'bound', string.format('%.0f', bound))
  redis.call('EXPIRE', KEYS[5], ARGV[2])
elseif fence[1] ~= server then
  return {3, server}
end
local timestamp = tonumber(ARGV[6])
if timestamp <= floor then
  return {4, string.format('%.0f', floor)}
end
if timestamp > bound then
  return {3, server}
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return {1}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local oldest = redis.call('LINDEX', KEYS[3], -1)
while oldest and tonumber(oldest) <= now - window do
  redis.call('RPOP', KEYS[3])
  oldest = redis.call('LINDEX', KEYS[3], -1)
end
local retry_after = 0
if redis.call('LLEN', KEYS[3]) >= limit then
  retry_after = math.max(1, tonumber(oldest) + window - now)
else
  redis.call('LPUSH', KEYS[3], string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[3], window)
end
local last_seen_free = redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[5]) and 1 or 0
if KEYS[8] then
  return {2, retry_after, last_seen_free,
          redis.call('GET', KEYS[7]), redis.call('GET', KEYS[8]), redis.call('PTTL', KEYS[8])}
end
return {2, retry_after, last_seen_free}
"""
STALE, REPLAYED, ADMITTED, UNBOUNDED, FENCED = 0, 1, 2, 3, 4
# Answered here, not by the script: the device's row is gone; Redis changed identity at
# every one of MAX_FENCE_READS round trips.
DEVICE_GONE, UNSETTLED = 5, 6


def admit(*, entry: DeviceEntry, nonce: str, timestamp: int, wake_topic: tuple[str, int] | None) -> list:
    """Step 4 for a request verified against ``entry``: the script's answer (above), with
    the wake generation and marker made into a ``PendingCheck``, or DEVICE_GONE or
    UNSETTLED."""
    device = entry.device
    limit, window_seconds = device_rate(device)
    keys = [
        DEVICE_GENERATION_KEY.format(key_id=device.key_id),
        NONCE_KEY.format(device=device.pk, nonce=nonce),
        THROTTLE_KEY.format(device=device.pk),
        LAST_SEEN_KEY.format(device=device.pk),
        FENCE_KEY.format(device=device.pk),
        EPOCH_KEY,
    ]
    scope = database_scope() if wake_topic else ""
    if wake_topic:
        keys += [generation_key(scope, *wake_topic), marker_key(scope, *wake_topic)]
    args = [
        entry.generation,
        2 * settings.HMAC_CLOCK_SKEW_SECONDS + 60,
        limit,
        window_seconds * 1000,
        LAST_SEEN_RESOLUTION_SECONDS,
        timestamp,
    ]
    fence = ["", "", ""]
    # Fresh for every request: a token kept (per process, say) would come back after a
    # second loss and name the same identity as after the first. 16 hex digits: the
    # identity (40 + 1 + 40 + 1 + 16) fits ReplayFence.redis_server (100).
    epoch = secrets.token_hex(8)
    for _read in range(MAX_FENCE_READS):
        outcome = get_script(ADMIT)(keys=keys, args=[*args, *fence, epoch])
        if outcome[0] != UNBOUNDED:
            break
        # Once per half to whole HMAC_REPLAY_FENCE_SECONDS per device, and after Redis lost its copy.
        server = outcome[1].decode()
        bounds = replay_fence_raise(device_id=device.pk, redis_server=server, signed_at=timestamp)
        if bounds is None:
            return [DEVICE_GONE]
        fence = [server, *bounds]
    else:
        logger.warning("EA authentication unavailable: Redis kept changing while read")
        return [UNSETTLED]
    if wake_topic and outcome[0] == ADMITTED:
        _, retry_after_ms, last_seen_free, generation, marked, pttl = outcome
        check = pending_check(scope, *wake_topic, generation=generation, marked=marked, pttl=pttl)
        return [ADMITTED, retry_after_ms, last_seen_free, check]
    return outcome
