"""The soak's short variant (bench/soak.py --quick) in make test: every fault once, a
few EAs, about a minute; `make soak` runs the long one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from config.environment import database_url

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_soak_closes_every_crossed_position_exactly_once_through_every_fault(tmp_path):
    # given: the servers the tests use (the soak makes its own database there, and runs its own redis-server)
    environment = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "PYTHONUNBUFFERED": "1",
    }
    verdict_path = tmp_path / "verdict.json"

    # when
    run = subprocess.run(
        [sys.executable, "bench/soak.py", "--quick", "--json", str(verdict_path)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )

    # then
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert verdict_path.exists(), output
    verdict = json.loads(verdict_path.read_text())
    assert verdict["expected"] > 0, output
    assert verdict["executed"] == verdict["expected"], output
    assert (verdict["duplicate"], verdict["missing"], verdict["lost"], verdict["false_close"]) == (
        0,
        0,
        0,
        0,
    ), output
    assert verdict["not_recovered"] == [], output
    assert verdict["replays_not_refused"] == 0, output
    assert verdict["duplicate_mismatches"] == 0, output
    assert set(verdict["injected"]) == {"duplicated ack", "lost ack answer", "replayed ack"}, output
    # No 500 under any fault (the one the soak met, a quote as Redis goes down, is fixed:
    # tests/ea_gateway/test_feed_broker_down.py).
    assert verdict["responses_500_at"] == [], output
