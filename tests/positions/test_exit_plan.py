"""The plan walk (positions.exit_plan): pure, tested in microseconds."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from positions.exit_plan import (
    BREAKEVEN,
    PARTIAL_TP,
    SL,
    STOP_MOVED,
    TP,
    TRAILING,
    ExitPlan,
    PathQuote,
    PlanState,
    plan_advance,
)

D = Decimal


def path(*bids: str, spread: str = "0.0002", start_seq: int = 1) -> list[PathQuote]:
    return [
        PathQuote(
            seq=start_seq + index,
            bid=D(bid),
            ask=D(bid) + D(spread),
            ts=1000.0 + index,
            received_at=1000.0 + index,
        )
        for index, bid in enumerate(bids)
    ]


BUY = ExitPlan(side="buy", entry=D("1.1000"), sl=D("1.0950"), tp=D("1.1100"))


def exits(events):
    return [(event.kind, event.quote.seq) for event in events if event.kind != STOP_MOVED]


def test_a_stop_crossed_inside_a_path_that_comes_back_still_exits():
    # a wick: only the middle quote crosses
    state, events = plan_advance(BUY, PlanState(), path("1.0990", "1.0949", "1.0990"))
    assert exits(events) == [(SL, 2)]
    assert state.exit_kind == SL
    assert state.last_seq == 3


def test_the_first_level_crossed_wins_and_nothing_happens_after():
    state, events = plan_advance(BUY, PlanState(), path("1.1101", "1.0900"))
    assert exits(events) == [(TP, 1)]
    _, later = plan_advance(BUY, state, path("1.0900", start_seq=3))
    assert later == []


def test_a_sell_is_judged_on_the_ask():
    sell = ExitPlan(side="sell", entry=D("1.1000"), sl=D("1.1050"), tp=D("1.0900"))
    # the bid crosses the stop but the ask (bid + spread) decides: 1.1049 + 0.0002 >= 1.1050
    _, events = plan_advance(sell, PlanState(), path("1.1047", "1.1049"))
    assert exits(events) == [(SL, 2)]


def test_partials_fire_once_each_in_order_and_the_target_ends_the_plan():
    plan = ExitPlan(
        side="buy",
        entry=D("1.1000"),
        sl=D("1.0950"),
        tp=D("1.1100"),
        partials=((D("1.1040"), D("0.5")), (D("1.1070"), D("0.25"))),
    )
    state, events = plan_advance(plan, PlanState(), path("1.1041", "1.1030", "1.1045", "1.1071"))
    assert [(event.kind, event.partial_index, event.quote.seq) for event in events] == [
        (PARTIAL_TP, 0, 1),
        (PARTIAL_TP, 1, 4),
    ]
    assert state.partials_hit == (0, 1)
    assert not state.exit_kind
    state, events = plan_advance(plan, state, path("1.1100", start_seq=5))
    assert exits(events) == [(TP, 5)]


def test_trailing_activates_follows_the_best_and_exits_on_the_pullback():
    plan = ExitPlan(
        side="buy",
        entry=D("1.1000"),
        sl=D("1.0950"),
        tp=None,
        trailing_distance=D("0.0020"),
        trailing_activation=D("0.0030"),
    )
    state, events = plan_advance(plan, PlanState(), path("1.1020", "1.1035", "1.1050", "1.1040", "1.1029"))
    # activated at 1.1035 (stop 1.1015), moved at 1.1050 (stop 1.1030), hit at 1.1029
    moves = [(event.old_stop, event.new_stop) for event in events if event.kind == STOP_MOVED]
    assert moves == [(D("1.0950"), D("1.1015")), (D("1.1015"), D("1.1030"))]
    assert exits(events) == [(TRAILING, 5)]
    assert state.moved_by == TRAILING
    assert state.best == D("1.1050")


def test_breakeven_moves_the_stop_to_entry_plus_offset_and_exits_there():
    plan = ExitPlan(
        side="sell",
        entry=D("1.1000"),
        sl=D("1.1050"),
        tp=D("1.0800"),
        breakeven_trigger=D("0.0040"),
        breakeven_offset=D("0.0005"),
    )
    # ask = bid + 0.0002: favour reaches 0.0040 at bid 1.0958 (ask 1.0960)
    state, events = plan_advance(plan, PlanState(), path("1.0970", "1.0958", "1.0990", "1.0994"))
    assert state.moved_stop == D("1.0995")
    assert state.moved_by == BREAKEVEN
    assert exits(events) == [(BREAKEVEN, 4)]  # ask 1.0996 >= 1.0995


def test_the_recheck_delay_needs_a_later_quote_still_across():
    state, events = plan_advance(BUY, PlanState(), path("1.0949"), recheck_delay_seconds=2)
    assert events == []
    assert state.pending == (SL, 1000.0)
    state, events = plan_advance(BUY, state, path("1.0990", start_seq=2), recheck_delay_seconds=2)
    assert state.pending is None  # a quote back inside resets it
    quotes = [
        PathQuote(3, D("1.0949"), D("1.0951"), 1010.0, 1010.0),
        PathQuote(4, D("1.0948"), D("1.0950"), 1012.0, 1012.0),
    ]
    state, events = plan_advance(BUY, state, quotes, recheck_delay_seconds=2)
    assert exits(events) == [(SL, 4)]


def test_quotes_already_walked_are_skipped():
    state, _ = plan_advance(BUY, PlanState(), path("1.0990", "1.0980"))
    _, events = plan_advance(BUY, state, path("1.0900", "1.0980"))  # seq 1 and 2 again
    assert events == []


def test_the_state_round_trips_through_json():
    state = PlanState(
        last_seq=7,
        best=D("1.2"),
        moved_stop=D("1.1"),
        moved_by=TRAILING,
        partials_hit=(0, 2),
        exit_kind="",
        pending=(SL, 12.5),
    )
    assert PlanState.from_json(state.to_json()) == state


bids = st.lists(st.integers(min_value=-60, max_value=60), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    steps=bids,
    side=st.sampled_from(["buy", "sell"]),
    distance=st.integers(min_value=1, max_value=30),
    activation=st.integers(min_value=0, max_value=40),
    trigger=st.one_of(st.none(), st.integers(min_value=1, max_value=40)),
    chunks=st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=20),
)
def test_properties_the_stop_never_loosens_one_exit_and_chunking_changes_nothing(
    steps, side, distance, activation, trigger, chunks
):
    pip = D("0.0001")
    plan = ExitPlan(
        side=side,
        entry=D("1.1000"),
        sl=D("1.0900") if side == "buy" else D("1.1100"),
        tp=D("1.1150") if side == "buy" else D("1.0850"),
        partials=((D("1.1050") if side == "buy" else D("1.0950"), D("0.5")),),
        trailing_distance=distance * pip,
        trailing_activation=activation * pip,
        breakeven_trigger=None if trigger is None else trigger * pip,
    )
    price, quotes = D("1.1000"), []
    for index, step in enumerate(steps):
        price += step * pip
        quotes.append(PathQuote(index + 1, price, price + D("0.0002"), 1000.0 + index, 1000.0 + index))

    # all at once
    whole, whole_events = plan_advance(plan, PlanState(), quotes)
    # in arbitrary chunks, through the JSON the state is stored as
    state, chunked_events, start = PlanState(), [], 0
    for size in chunks * 10:
        if start >= len(quotes):
            break
        state, events = plan_advance(plan, PlanState.from_json(state.to_json()), quotes[start : start + size])
        chunked_events.extend(events)
        start += size
    state, events = plan_advance(plan, state, quotes[start:])
    chunked_events.extend(events)

    assert state == whole
    assert [(e.kind, e.quote.seq, e.partial_index) for e in chunked_events] == [
        (e.kind, e.quote.seq, e.partial_index) for e in whole_events
    ]
    assert len([e for e in whole_events if e.kind not in (STOP_MOVED, PARTIAL_TP)]) <= 1
    stops = [e.new_stop for e in whole_events if e.kind == STOP_MOVED]
    tighter = (lambda a, b: b >= a) if side == "buy" else (lambda a, b: b <= a)
    assert all(tighter(a, b) for a, b in zip([plan.sl, *stops], stops, strict=False))
