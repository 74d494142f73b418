"""Command line: ``python -m ea_client --server URL --key K --secret S``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType

from ea_client.client import (
    LONG_POLL_MAX_SECONDS,
    LONG_POLL_SECONDS,
    LONG_POLL_TIMEOUT_MARGIN_SECONDS,
    EAClient,
)
from ea_client.executors import ExecutionError, Executor, MT5Executor, SimulatedBroker
from ea_client.store import ExecutedStore
from ea_client.transport import SignedTransport

SECRET_ENV = "VEILSTOP_EA_SECRET"  # noqa: S105 -- the name of a variable, not a secret
MT5_PASSWORD_ENV = "VEILSTOP_MT5_PASSWORD"  # noqa: S105 -- likewise
STATE_DIR_ENV = "VEILSTOP_EA_STATE_DIR"


def default_state_path(key: str) -> Path:
    """Where a device's executed ids live unless --state says otherwise."""
    directory = os.environ.get(STATE_DIR_ENV) or Path.home() / ".veilstop-ea"
    return Path(directory) / f"{key}.sqlite3"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _money(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ea_client",
        description=(
            "Veilstop reference EA client: polls approved signals and places them, carries out "
            "close commands, and sends heartbeats, every request HMAC-signed as in docs/ea-protocol.md."
        ),
        epilog=(
            f"The secret may come from the environment variable {SECRET_ENV} instead of --secret, "
            "which keeps it out of the process list and shell history."
        ),
    )
    connection = parser.add_argument_group("server")
    connection.add_argument(
        "--server", required=True, metavar="URL", help="server base URL, e.g. https://veilstop.example"
    )
    connection.add_argument(
        "--key", required=True, metavar="K", help="the device's public key id (X-Device-Key)"
    )
    connection.add_argument(
        "--secret",
        default=os.environ.get(SECRET_ENV),
        metavar="S",
        help=f"the device's HMAC secret, shown once when the device was created (default: ${SECRET_ENV})",
    )
    connection.add_argument(
        "--max-retries",
        type=int,
        choices=range(11),
        default=3,
        metavar="N",
        help="retries of a request after a connection error, 5xx or 429 (0-10, default 3)",
    )
    connection.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="per-request timeout (default 10); a long-poll's is its wait plus "
        f"{LONG_POLL_TIMEOUT_MARGIN_SECONDS}",
    )

    connection.add_argument(
        "--state",
        metavar="PATH",
        help="SQLite file keeping what was executed for each approval and close command, so a "
        f"restarted EA never trades twice for one id (default: ${STATE_DIR_ENV} or ~/.veilstop-ea, "
        "then KEY.sqlite3); ':memory:' keeps it for this run only",
    )

    broker = parser.add_argument_group("broker")
    choice = broker.add_mutually_exclusive_group()
    choice.add_argument(
        "--simulated",
        dest="executor",
        action="store_const",
        const="simulated",
        help="trade on an in-memory simulated broker (the default except on Windows)",
    )
    choice.add_argument(
        "--mt5",
        dest="executor",
        action="store_const",
        const="mt5",
        help="trade through the local MetaTrader 5 terminal (Windows, needs the MetaTrader5 package; "
        "the default on Windows)",
    )
    broker.add_argument(
        "--balance",
        type=_money,
        default=Decimal("10000"),
        help="simulated broker's starting balance (default 10000)",
    )
    broker.add_argument(
        "--simulated-state",
        metavar="PATH",
        help="keep the simulated broker's account in this JSON file, so it outlives a restart "
        "(default: in memory)",
    )
    broker.add_argument(
        "--mt5-login", type=int, metavar="LOGIN", help="MT5 account number (default: the terminal's)"
    )
    broker.add_argument(
        "--mt5-server",
        metavar="NAME",
        help="MT5 trade server name, e.g. MetaQuotes-Demo (default: the terminal's)",
    )
    broker.add_argument(
        "--mt5-path", metavar="PATH", help="path to terminal64.exe (default: found by the package)"
    )
    broker.add_argument(
        "--mt5-password",
        default=os.environ.get(MT5_PASSWORD_ENV),
        metavar="PASSWORD",
        help=f"MT5 account password (default: ${MT5_PASSWORD_ENV}, else the terminal's saved login)",
    )

    loop = parser.add_argument_group("loop")
    loop.add_argument(
        "--wait",
        type=int,
        choices=range(LONG_POLL_MAX_SECONDS + 1),
        default=LONG_POLL_SECONDS,
        metavar="SECONDS",
        help=f"long-poll close commands and approvals, each waiting up to this long for the server "
        f"(0-{LONG_POLL_MAX_SECONDS}, default {LONG_POLL_SECONDS}); 0 polls plainly every --interval",
    )
    loop.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between heartbeats, and between cycles when --wait is 0 (default 1.0)",
    )
    loop.add_argument(
        "--once", action="store_true", help="run a single cycle and exit (status 1 if any step failed)"
    )
    loop.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default INFO)"
    )
    return parser


def build_executor(args: argparse.Namespace) -> Executor:
    kind = args.executor or ("mt5" if sys.platform == "win32" else "simulated")
    if kind == "mt5":
        return MT5Executor(
            login=args.mt5_login, password=args.mt5_password, server=args.mt5_server, path=args.mt5_path
        )
    return SimulatedBroker(balance=args.balance, state_path=args.simulated_state)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error(f"--secret is required (or set {SECRET_ENV})")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        transport = SignedTransport(
            args.server, args.key, args.secret, timeout=args.timeout, max_retries=args.max_retries
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        executor = build_executor(args)
    except ImportError:
        parser.exit(2, "the MetaTrader5 package is not installed: pip install MetaTrader5 (Windows only)\n")
    except ExecutionError as error:
        parser.exit(2, f"{error}\n")
    store = ExecutedStore(args.state or default_state_path(args.key))
    client = EAClient(transport, executor, long_poll_seconds=args.wait, store=store)

    try:
        if args.once:
            return 0 if client.run_once() else 1

        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            logging.getLogger("ea_client").info("signal %s received, stopping after this cycle", signum)
            stop.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        client.run_forever(args.interval, stop)
        return 0
    finally:
        store.close()
        if isinstance(executor, MT5Executor):
            executor.shutdown()


if __name__ == "__main__":
    sys.exit(main())
