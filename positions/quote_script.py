"""The Lua script that stores a batch of the owner's quotes (``positions.quotes``):
the latest quote per instrument, the quote path (``positions.quote_path``) and the
market guard's spread window and flags (``positions.market_guard``), in one round trip."""

from __future__ import annotations

# KEYS[1] = the batch's record ("" for none), then per quote its hash, its quote path
# (see positions.quote_path) and its spread window (positions.market_guard). ARGV[1..8] =
# received_at, max age, max jump, path cap, sequence base, how long the batch record is
# kept, spread window size, fewest spreads to judge against; then per quote bid, ask, ts,
# spread, spread factor, gap (a price distance; 0: none).
# Returns the stored flags ("1"/"0" per quote) and whether the batch had been applied before.
#
# The whole batch is one script, so Redis applies all of it or none of it. Its record
# (the flags, later a mark once its bars are in PostgreSQL) makes a batch sent again,
# by a feed retrying after a 503 or a lost answer, a replay: nothing is stored twice,
# no sequence number or spike flag is spent again, and the answer is the first one's.
#
# Per quote: it replaces the held one only if it is newer. A quote fresh on arrival also
# joins the path, numbered (seq) and flagged when it jumped beyond the spike limit from
# the quote before; seq is never below the arrival time in microseconds, so it keeps
# growing across a Redis restart that lost (or rolled back) the counter. The market
# guard's flag (path and hash): "spread" when its spread is wider than the factor times
# the median of the window (the previous quotes' spreads: wider than the median exactly
# when at least half of them, rounded up, are narrower than spread / factor, so no sort),
# "gap" when its mid moved beyond the gap from the held quote's. Its spread then joins
# the window, so a spread that stays wide becomes the norm after half a window.
STORE_BATCH = """
if KEYS[1] ~= '' then
    local recorded = redis.call('HMGET', KEYS[1], 'stored', 'bars')
    if recorded[1] then
        return {recorded[1], recorded[2] or '0', 1}
    end
end
local flags = {}
local windows, window_keys = {}, {}
local window_size, fewest = tonumber(ARGV[7]), tonumber(ARGV[8])
for i = 0, (#KEYS - 1) / 3 - 1 do
    local quote_key, path_key, window_key = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
    local bid, ask, ts = ARGV[9 + 6 * i], ARGV[10 + 6 * i], ARGV[11 + 6 * i]
    local spread, factor, gap = ARGV[12 + 6 * i], tonumber(ARGV[13 + 6 * i]), tonumber(ARGV[14 + 6 * i])
    local current = redis.call('HMGET', quote_key, 'bid', 'ask', 'ts')
    if current[3] and tonumber(current[3]) >= tonumber(ts) then
        flags[#flags + 1] = '0'
    else
        flags[#flags + 1] = '1'
        local anomaly = ''
        if tonumber(ARGV[1]) - tonumber(ts) <= tonumber(ARGV[2]) then
            local spike = 0
            local mid = (tonumber(bid) + tonumber(ask)) / 2
            if current[1] then
                local previous_mid = (tonumber(current[1]) + tonumber(current[2])) / 2
                if previous_mid > 0 and math.abs(mid - previous_mid) / previous_mid > tonumber(ARGV[3]) then
                    spike = 1
                end
                if gap > 0 and math.abs(mid - previous_mid) > gap then
                    anomaly = 'gap'
                end
            end
            local window = windows[window_key]
            if not window then
                window = {texts = redis.call('LRANGE', window_key, 0, -1), numbers = {}}
                for index, value in ipairs(window.texts) do
                    window.numbers[index] = tonumber(value)
                end
                windows[window_key] = window
                window_keys[#window_keys + 1] = window_key
            end
            local numbers, width = window.numbers, tonumber(spread)
            if factor > 0 and #numbers >= fewest and width > 0 then
                local narrower = 0
                for _, value in ipairs(numbers) do
                    if value * factor < width then narrower = narrower + 1 end
                end
                if narrower >= math.ceil(#numbers / 2) then
                    anomaly = (anomaly == '') and 'spread' or 'spread+gap'
                end
            end
            numbers[#numbers + 1] = width
            window.texts[#window.texts + 1] = spread
            if #numbers > window_size then
                table.remove(numbers, 1)
                table.remove(window.texts, 1)
            end
            local seq = redis.call('HINCRBY', quote_key, 'seq', 1)
            if seq < tonumber(ARGV[5]) then
                seq = tonumber(ARGV[5])
                redis.call('HSET', quote_key, 'seq', ARGV[5])
            end
            local entry = table.concat(
                {string.format('%.0f', seq), bid, ask, ts, ARGV[1], spike, anomaly}, '|')
            redis.call('RPUSH', path_key, entry)
            redis.call('LTRIM', path_key, -tonumber(ARGV[4]), -1)
        end
        redis.call('HSET', quote_key, 'bid', bid, 'ask', ask, 'ts', ts, 'received_at', ARGV[1],
                   'anomaly', anomaly)
    end
end
-- Each spread window written back once per batch, not once per quote.
for _, window_key in ipairs(window_keys) do
    redis.call('DEL', window_key)
    redis.call('RPUSH', window_key, unpack(windows[window_key].texts))
end
local stored = table.concat(flags)
if KEYS[1] ~= '' then
    redis.call('HSET', KEYS[1], 'stored', stored)
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
end
return {stored, '0', 0}
"""
