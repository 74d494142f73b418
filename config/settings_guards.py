"""Settings of the clients' risk guards and the market guard (README: Configuration);
read by config.settings."""

from __future__ import annotations

import os
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ImproperlyConfigured

from config.environment import EnvironmentReader

env = EnvironmentReader(os.environ)

# Client risk guards: exposure limits (0: none) and the market guard (README: Configuration).
GUARD_MAX_OPEN_POSITIONS = env.int("GUARD_MAX_OPEN_POSITIONS", 0, minimum=0)
GUARD_MAX_VOLUME_PER_INSTRUMENT = env.decimal("GUARD_MAX_VOLUME_PER_INSTRUMENT", "0", minimum=Decimal(0))
MARKET_GUARD_SPREAD_FACTOR = env.decimal(
    "MARKET_GUARD_SPREAD_FACTOR", "5", minimum=Decimal(0), maximum=Decimal(1000)
)
if 0 < MARKET_GUARD_SPREAD_FACTOR <= 1:
    raise ImproperlyConfigured("MARKET_GUARD_SPREAD_FACTOR must be above 1, or 0 for never")
MARKET_GUARD_SPREAD_WINDOW = env.int("MARKET_GUARD_SPREAD_WINDOW", 50, minimum=10, maximum=1000)
MARKET_GUARD_GAP_PIPS = env.decimal("MARKET_GUARD_GAP_PIPS", "0", minimum=Decimal(0))
MARKET_GUARD_QUOTE_TIMEOUT_SECONDS = env.int(
    "MARKET_GUARD_QUOTE_TIMEOUT_SECONDS", 60, minimum=1, maximum=86400
)
# Client risk guards (positions.guards). A limit of 0 is off; a client's own limit, when
# set, replaces the default. Percentages of the account's equity.
GUARD_DRAWDOWN_LIMIT_PERCENT = env.decimal(
    "GUARD_DRAWDOWN_LIMIT_PERCENT", "0", minimum=Decimal(0), maximum=Decimal("99.99")
)
GUARD_DAILY_LOSS_LIMIT_PERCENT = env.decimal(
    "GUARD_DAILY_LOSS_LIMIT_PERCENT", "0", minimum=Decimal(0), maximum=Decimal("99.99")
)
# An account whose last heartbeat is older than this, with live positions, is "stale": an
# alert, never a close. Also how long a held equity jump waits for its confirmation.
GUARD_EQUITY_STALE_SECONDS = env.int("GUARD_EQUITY_STALE_SECONDS", 120, minimum=10, maximum=86_400)
# A move of more than this from the last accepted equity is held until the next heartbeat
# confirms it (the spike rule of quotes, for equity).
GUARD_EQUITY_JUMP_PERCENT = env.decimal(
    "GUARD_EQUITY_JUMP_PERCENT", "20", minimum=Decimal("0.01"), maximum=Decimal(100)
)
# The daily loss limit's day starts at midnight in this IANA time zone.
GUARD_DAY_TIMEZONE = env.str("GUARD_DAY_TIMEZONE", "UTC")
try:
    ZoneInfo(GUARD_DAY_TIMEZONE)
except (ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(
        f"GUARD_DAY_TIMEZONE must be an IANA time zone (UTC, Europe/London...), not {GUARD_DAY_TIMEZONE!r}"
    ) from None
GUARD_CHECK_INTERVAL_SECONDS = env.int("GUARD_CHECK_INTERVAL_SECONDS", 10, minimum=1, maximum=3600)
