"""The guards' arithmetic: plain functions, no Django.

An account's equity goes through ``equity_step`` with each heartbeat. Like the spike
rule of quotes (``positions.quote_path``), a move beyond the jump limit from the last
accepted equity is *held*: the next heartbeat, within the staleness window, confirms it
(it does not jump away from the held value again) and both are accepted; one that comes
back near the last accepted equity drops the held one as a lone jump; one that jumps from
both is held in its place. Only accepted equity moves the peak and the day and is judged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Account:
    peak: Decimal
    day: date
    day_start: Decimal
    last: Decimal
    last_at: datetime
    held: Decimal | None = None
    held_at: datetime | None = None


@dataclass(frozen=True)
class Step:
    account: Account
    judge: bool  # new equity was accepted: judge the account
    dropped: Decimal | None = None  # a held jump that no heartbeat confirmed


@dataclass(frozen=True)
class Breach:
    limit: str  # "drawdown" or "daily_loss"
    percent: Decimal
    limit_percent: Decimal

    def describe(self) -> str:
        what = "drawdown from the peak" if self.limit == "drawdown" else "loss since the day's first equity"
        return f"{what} {self.percent.quantize(Decimal('0.01'))}% reached the limit of {self.limit_percent}%"


def jumped(previous: Decimal, equity: Decimal, *, jump_fraction: Decimal) -> bool:
    if previous == 0:
        return equity != 0
    return abs(equity - previous) > abs(previous) * jump_fraction


def account_start(*, equity: Decimal, now: datetime, day: date) -> Account:
    return Account(peak=equity, day=day, day_start=equity, last=equity, last_at=now)


def _accept(
    account: Account, equity: Decimal, *, now: datetime, day: date, also: Decimal | None = None
) -> Account:
    new_day = account.day != day
    return Account(
        peak=max(account.peak, equity, also if also is not None else equity),
        day=day,
        day_start=equity if new_day else account.day_start,
        last=equity,
        last_at=now,
    )


def equity_step(
    account: Account, equity: Decimal, *, now: datetime, day: date, jump_fraction: Decimal, window: timedelta
) -> Step:
    """The account after a heartbeat reporting ``equity`` at ``now`` (``day``: its date
    at the guard's day boundary)."""
    held = account.held
    if held is not None and account.held_at is not None and now - account.held_at > window:
        account, dropped_late = replace(account, held=None, held_at=None), held
        held = None
    else:
        dropped_late = None
    if held is not None:
        if not jumped(held, equity, jump_fraction=jump_fraction):
            return Step(_accept(account, equity, now=now, day=day, also=held), judge=True)
        if not jumped(account.last, equity, jump_fraction=jump_fraction):
            return Step(_accept(account, equity, now=now, day=day), judge=True, dropped=held)
        return Step(replace(account, held=equity, held_at=now), judge=False, dropped=held)
    if jumped(account.last, equity, jump_fraction=jump_fraction):
        return Step(replace(account, held=equity, held_at=now), judge=False, dropped=dropped_late)
    return Step(_accept(account, equity, now=now, day=day), judge=True, dropped=dropped_late)


def rearmed(account: Account, *, day: date) -> Account:
    """A re-armed guard measures from the equity the owner re-armed at: the peak and the
    day's start become the last accepted equity, and a held jump is forgotten."""
    return Account(
        peak=account.last, day=day, day_start=account.last, last=account.last, last_at=account.last_at
    )


def drawdown_percent(account: Account) -> Decimal:
    if account.peak <= 0:
        return Decimal(0)
    return (account.peak - account.last) / account.peak * HUNDRED


def daily_loss_percent(account: Account, *, day: date) -> Decimal:
    """The loss since the day's first equity (0 when up, and on a day with no equity yet)."""
    if account.day != day or account.day_start <= 0:
        return Decimal(0)
    return max(Decimal(0), (account.day_start - account.last) / account.day_start * HUNDRED)


def breach(
    account: Account, *, day: date, drawdown_limit: Decimal | None, daily_loss_limit: Decimal | None
) -> Breach | None:
    """Equity below peak x (1 - limit %), or a loss since the day's first equity of at
    least the daily limit %. A limit of None or 0 is off."""
    if drawdown_limit and account.last < account.peak * (1 - drawdown_limit / HUNDRED):
        return Breach("drawdown", drawdown_percent(account), drawdown_limit)
    if daily_loss_limit:
        loss = daily_loss_percent(account, day=day)
        if loss >= daily_loss_limit:
            return Breach("daily_loss", loss, daily_loss_limit)
    return None
