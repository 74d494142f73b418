"""What `make run` says to the person who started it (scripts/start.sh).

    python scripts/console.py ports   exit 1, naming the variable, if a port to listen on is taken
    python scripts/console.py banner  wait for /healthz to answer 200, then print where everything is

Standard library only: it runs before anything else is up.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# The ports `make run` listens on, by the variable that sets each; the Bot API stand-in's
# only without a TELEGRAM_BOT_TOKEN (scripts/start.sh runs it then).
PORTS = {"WEB_PORT": "8000", "FLOWER_PORT": "5555"}
STANDIN_PORT = {"TELEGRAM_STANDIN_PORT": "8081"}
STANDIN_TOKEN = "standin"  # noqa: S105 - monitoring.notifications.standin.STANDIN_TOKEN, not a secret
HEALTHY_WITHIN_SECONDS = float(os.environ.get("VEILSTOP_START_TIMEOUT", "120"))


def ports() -> int:
    taken = []
    listened = PORTS if os.environ.get("TELEGRAM_BOT_TOKEN") else PORTS | STANDIN_PORT
    for variable, default in listened.items():
        value = os.environ.get(variable, default)
        if not value.isdigit() or not 0 < int(value) < 65536:
            print(f"make run: {variable}={value!r} is not a port number (1-65535).", file=sys.stderr)
            return 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers bind: a port whose last connections linger (TIME_WAIT after
            # the previous run) is free; one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", int(value)))
            except OSError:
                taken.append((variable, value))
    for variable, value in taken:
        print(
            f"make run: port {value} on 127.0.0.1 is taken (by another program, or a Veilstop "
            f"already running); choose another with {variable}, e.g. `{variable}={int(value) + 1} make run`.",
            file=sys.stderr,
        )
    return 1 if taken else 0


def banner() -> int:
    web, flower = (os.environ.get(variable, default) for variable, default in PORTS.items())
    (standin,) = (os.environ.get(variable, default) for variable, default in STANDIN_PORT.items())
    base = f"http://127.0.0.1:{web}"
    deadline = time.monotonic() + HEALTHY_WITHIN_SECONDS
    failing: list[str] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=3) as answer:  # noqa: S310 - our own URL
                if answer.status == 200:
                    break
        except urllib.error.HTTPError as error:
            try:
                failing = json.loads(error.read() or b"{}").get("failing", [])
            except (ValueError, AttributeError):  # not /healthz's JSON (a proxy's page, say)
                failing = [f"HTTP {error.code}"]
        except OSError:
            pass  # not listening yet
        time.sleep(1)
    else:
        print(
            f"\n  Veilstop did not answer healthy within {HEALTHY_WITHIN_SECONDS:.0f} s "
            f"(failing: {', '.join(failing) or 'no answer'}); see the log above.\n",
            flush=True,
        )
        return 1
    state = Path(os.environ.get("VEILSTOP_STATE_DIR", ".state"))
    demo = os.environ.get("VEILSTOP_DEMO", "1") != "0"
    every = os.environ.get("DEMO_SIGNAL_EVERY", "20")
    lines = [
        "",
        "  Veilstop is up. Ctrl-C stops everything.",
        "",
        f"    owner console   {base}/admin/",
        f"                    user 'owner', password in {state / 'owner-credentials.txt'}",
        f"    monitor         {base}/admin/monitor/",
        f"    API docs        {base}/api/v1/docs",
        f"    health          {base}/healthz",
        f"    metrics         {base}/metrics",
        f"    Flower          http://127.0.0.1:{flower}/",
        "",
        _telegram(standin, state),
        (
            f"  Demo: a replayed EURUSD feed, a bot publishing a signal every {every} s with hidden "
            "levels a few\n  pips around the market, and three simulated client EAs (alice, bob, carol) "
            "that take\n  them and execute the closes the server queues. VEILSTOP_DEMO=0 leaves it out."
            if demo
            else "  No demo (VEILSTOP_DEMO=0): connect your own feed and EAs (README, 'Connecting an EA')."
        ),
        (
            "  Logs: requests "
            + ("on" if os.environ.get("WEB_ACCESS_LOG", "1") not in {"0", "false", "off", "no"} else "off")
            + " (WEB_ACCESS_LOG), Celery at "
            + os.environ.get("CELERY_LOG_LEVEL", "INFO")
            + " (CELERY_LOG_LEVEL)."
        ),
        "",
    ]
    print("\n".join(lines), flush=True)
    return 0


def _telegram(standin_port: str, state: Path) -> str:
    standin = (
        os.environ.get("TELEGRAM_BOT_TOKEN") == STANDIN_TOKEN
        and os.environ.get("TELEGRAM_API_URL") == f"http://127.0.0.1:{standin_port}"
    )
    if not standin:
        return "  Telegram: messages go to the Bot API at " + os.environ.get(
            "TELEGRAM_API_URL", "https://api.telegram.org"
        )
    return (
        f"  Telegram: no TELEGRAM_BOT_TOKEN, so messages go to a local stand-in of the Bot API "
        f"(http://127.0.0.1:{standin_port}/):\n  one 'telegram.1 | ... to chat <id>: <text>' line "
        f"each in this log, one JSON line each in\n  {state / 'telegram-standin.jsonl'}, and "
        "the console's Outbox messages."
    )


if __name__ == "__main__":
    commands = {"ports": ports, "banner": banner}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(commands)}")
    sys.exit(commands[sys.argv[1]]())
