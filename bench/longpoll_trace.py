"""Per-stage timestamps for ``bench/longpoll_bench.py --trace``: where a round's time goes.

Loaded only by the bench, never by the product: gunicorn gets this module as its
config (the product's ``config.gunicorn`` plus a ``post_worker_init`` hook), and the
Celery worker is started through ``python -m bench.longpoll_trace worker ...``. Both
wrap a few product functions to push ``(stage, detail, time.time())`` onto one Redis
list of the bench's db; the bench reads it after the rounds and matches each stage
to its round by time. The stages, in the order a round passes them:

* ``feed_in`` / ``feed_slot`` / ``feed_out``: the feed's request reached Django, got
  its request slot, was answered (web);
* ``sweep_sent``: the sweep task handed to the broker (web);
* ``sweep_start`` / ``sweep_end``: the Celery worker runs it;
* ``wake_publish``: the generations raised and the ids published after the claim's
  commit (worker);
* ``hub``: a web worker's hub heard the ids;
* ``lease``: a woken request leased its device's commands (web), detail the device;
* ``slot_wait``: any request that waited over 5 ms for a request slot, detail the ms.
"""

from __future__ import annotations

import json
import os
import sys
import time

from config.gunicorn import *  # noqa: F403 - the product's gunicorn settings, plus the hook below
from config.gunicorn import post_fork as _product_post_fork

TRACE_KEY = "veilstop:bench:longpoll-trace"
FEED_PATH = "/api/v1/feed/quotes"


def record(stage: str, detail: object = "") -> None:
    from core.redis import get_redis

    get_redis().rpush(TRACE_KEY, json.dumps([stage, detail, time.time()]))


def post_fork(server, worker) -> None:
    _product_post_fork(server, worker)


def post_worker_init(worker) -> None:
    _trace_web()
    application = worker.wsgi

    def traced(environ, start_response):
        if environ.get("PATH_INFO") == FEED_PATH:
            record("feed_in")
            try:
                return application(environ, start_response)
            finally:
                record("feed_out")
        return application(environ, start_response)

    worker.wsgi = traced


def _trace_web() -> None:
    from core import request_slots
    from ea_gateway import wake as ea_wake
    from ea_gateway.api import views
    from positions import quotes

    take = request_slots.RequestSlots.take

    def timed_take(self, *args, **kwargs):
        started = time.perf_counter()
        slot = take(self, *args, **kwargs)
        waited = time.perf_counter() - started
        if waited > 0.005:
            record("slot_wait", round(waited * 1000, 1))
        return slot

    request_slots.RequestSlots.take = timed_take

    dispatch = ea_wake._Hub._dispatch

    register = ea_wake._Hub.register

    def traced_register(self, scope, kind, key):
        if kind == "d":
            record("register", key)
        return register(self, scope, kind, key)

    ea_wake._Hub.register = traced_register

    def traced_dispatch(self, channel, data):
        record("hub", f"{channel.decode().split(':')[2]}/{data.decode()[:40]}")
        return dispatch(self, channel, data)

    ea_wake._Hub._dispatch = traced_dispatch

    fetch_unless_empty = ea_wake.fetch_unless_empty

    def traced_fetch_unless_empty(*, kind, key, fetch, checked=None):
        found = fetch_unless_empty(kind=kind, key=key, fetch=fetch, checked=checked)
        if kind == "d":
            record("look", f"{key}:{len(found[0])}")
        return found

    ea_wake.fetch_unless_empty = traced_fetch_unless_empty

    lease = views.close_commands_lease

    def traced_lease(*, device_id, **kwargs):
        leased = lease(device_id=device_id, **kwargs)
        if leased.commands:
            record("lease", device_id)
        return leased

    views.close_commands_lease = traced_lease

    send = quotes.current_app.send_task

    def traced_send(name, *args, **kwargs):
        result = send(name, *args, **kwargs)
        record("sweep_sent", name)
        return result

    quotes.current_app.send_task = traced_send

    feed_post = views.FeedQuotesView.post

    def traced_post(self, request):
        record("feed_slot")
        return feed_post(self, request)

    views.FeedQuotesView.post = traced_post


def _trace_worker() -> None:
    from celery.signals import task_postrun, task_prerun

    from core import wake

    publish = wake.publish

    def traced_publish(kind, keys):
        publish(kind, keys)
        record("wake_publish", len(keys))

    wake.publish = traced_publish
    task_prerun.connect(lambda sender=None, **kwargs: record("sweep_start", sender.name), weak=False)
    task_postrun.connect(lambda sender=None, **kwargs: record("sweep_end", sender.name), weak=False)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    _trace_worker()
    from config.celery import app

    app.worker_main(["worker", *sys.argv[2:]])


STAGES = ("feed_in", "feed_slot", "sweep_sent", "feed_out", "sweep_start", "wake_publish", "sweep_end")


def stages_print(marks: list[tuple[int, float, list[float]]]) -> None:
    """Each stage's offset from the feed's request being sent, per round (ms): the median
    and worst over the rounds, and the slowest rounds in full."""
    import statistics

    from core.redis import get_redis

    events = sorted((json.loads(raw) for raw in get_redis().lrange(TRACE_KEY, 0, -1)), key=lambda e: e[2])
    rows = []
    for position, (round_index, sent, latencies) in enumerate(marks):
        until = marks[position + 1][1] if position + 1 < len(marks) else float("inf")
        mine = [(stage, detail, (at - sent) * 1000) for stage, detail, at in events if sent <= at < until]
        row: dict[str, float] = {"round": round_index}
        for stage in STAGES:
            offsets = [offset for name, _, offset in mine if name == stage]
            if offsets:
                row[stage] = offsets[0]
        for stage in ("hub", "lease"):
            offsets = [offset for name, _, offset in mine if name == stage]
            if offsets:
                row[f"{stage}_first"], row[f"{stage}_last"] = offsets[0], offsets[-1]
        row["ea_first"], row["ea_last"] = latencies[0] * 1000, latencies[-1] * 1000
        waits = [float(detail) for name, detail, _ in mine if name == "slot_wait"]
        row["slot_waits"], row["slot_wait_max"] = len(waits), max(waits, default=0.0)
        rows.append(row)
    columns = [
        *STAGES, "hub_first", "hub_last", "lease_first", "lease_last", "ea_first", "ea_last",
        "slot_waits", "slot_wait_max",
    ]  # fmt: skip
    print("\nper-stage offsets from the feed request sent (ms): median / p90 / max over rounds")
    for column in columns:
        values = sorted(row[column] for row in rows if column in row)
        if values:
            p90 = values[max(0, int(0.9 * len(values)) - 1)]
            print(f"  {column:14} {statistics.median(values):8.1f} {p90:8.1f} {values[-1]:8.1f}")
    print("slowest rounds (by last EA), each stage's offset (ms):")
    print("  " + " ".join(f"{column[:11]:>11}" for column in ["round", *columns]))
    for row in sorted(rows, key=lambda r: -r["ea_last"])[:8]:
        print("  " + " ".join(f"{row.get(column, float('nan')):11.1f}" for column in ["round", *columns]))


def stages_dump() -> None:
    """Every stage recorded, as they came, to a file (a run that failed)."""
    from core.redis import get_redis

    events = sorted((json.loads(raw) for raw in get_redis().lrange(TRACE_KEY, 0, -1)), key=lambda e: e[2])
    if not events:
        return
    import tempfile

    with tempfile.NamedTemporaryFile("w", prefix="longpoll-trace-", suffix=".txt", delete=False) as out:
        path = out.name
        for stage, detail, at in events:
            out.write(f"{at - events[0][2]:9.3f} {stage} {detail}\n")
    print(f"\n{len(events)} stages recorded: {path}", file=sys.stderr)
