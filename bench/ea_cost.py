"""What one EA request costs the web process, counted rather than timed: SQL statements,
Redis round trips and the process's own CPU, per request.

``bench/ea_bench.py`` times the app under gunicorn and wrk; on a machine shared with
other work its rates and latencies move with the load. This measures the same requests
in one process, through Django's WSGI handler exactly as a gunicorn worker calls it
(middleware, request slots, URL map, view), and reports figures that do not depend on
the load: statements and round trips are counts, and the CPU time of the process
(``time.process_time``) moves far less than wall-clock rates (``--callgrind`` runs it
under valgrind for instruction counts, which do not move at all).

1. Claims an empty Redis db (``REDIS_TEST_DB``) and creates a database of its own
   (``bench_ea_<pid>_<time>``, dropped at the end), with ``ea_bench``'s fleet: EA
   devices of clients with one open position each, nothing pending.
2. Signs ``--requests`` requests of the endpoint up front (signing is the EA's cost,
   not the server's), spread over the devices, each nonce once.
3. Warms up (every device seen, per-process caches filled), then sends them one by one
   through the WSGI handler, and prints per request: SQL statements, Redis round trips
   and CPU microseconds (the best of ``--repeat`` passes).
   ``--profile DIR`` writes a cProfile of one more pass per endpoint.

    DJANGO_ENV=test REDIS_TEST_DB=15 .venv/bin/python bench/ea_cost.py --endpoint poll --requests 2000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ENDPOINTS = {
    "bare": ("GET", "/bench/bare"),
    "poll": ("GET", "/api/v1/client/poll"),
    "close-commands": ("GET", "/api/v1/client/close-commands"),
    "heartbeat": ("POST", "/api/v1/client/heartbeat"),
}


def setup() -> None:
    if os.environ.get("DJANGO_ENV") != "test":
        raise SystemExit("run with DJANGO_ENV=test (the bench flushes its Redis db)")
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    import django

    django.setup()


def environs(endpoint: str, count: int, fleet, query: str = "") -> list[dict]:
    from ea_protocol import signing

    method, path = ENDPOINTS[endpoint]
    timestamp = str(int(time.time()))
    run = secrets.token_hex(6)
    result = []
    for index in range(count):
        device = fleet[index % len(fleet)]
        from bench.ea_bench import request_body

        body = request_body(endpoint, device.ticket)
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.errors": sys.stderr,
            "_body": body,
        }
        if endpoint != "bare":
            nonce = f"{run}-{index:012d}"
            canonical = signing.canonical_string(
                method=method, path=path, query_string=query, timestamp=timestamp, nonce=nonce, body=body
            )
            environ.update(
                {
                    "HTTP_X_DEVICE_KEY": device.key_id,
                    "HTTP_X_TIMESTAMP": timestamp,
                    "HTTP_X_NONCE": nonce,
                    "HTTP_X_SIGNATURE": signing.sign(device.secret, canonical),
                }
            )
        if body:
            environ["CONTENT_TYPE"] = "application/json"
            environ["CONTENT_LENGTH"] = str(len(body))
        result.append(environ)
    return result


CALLGRIND_C = r"""
#include <valgrind/callgrind.h>
void measure_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void measure_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("measured"); }
"""


def callgrind_library(directory: Path):
    """Valgrind's client requests (start/stop counting) as a library Python can call."""
    import ctypes

    source, library = directory / "measure.c", directory / "measure.so"
    source.write_text(CALLGRIND_C)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)  # noqa: S603, S607
    return ctypes.CDLL(str(library))


def hold_off_periodic() -> None:
    """Valgrind runs the requests some 50 times slower: what a device does once every few
    seconds (its last-seen write, its replay fence, its device re-read, a "nothing
    pending" marker running out) would land on most requests. Held off (``--steady``, and
    always under valgrind), so the figures are those of the steady idle request; the
    other runs show what they add. The environment half is set by the caller
    (``STEADY_ENVIRONMENT``, read at settings time)."""
    import importlib

    for module, name in (
        ("ea_gateway.api.authentication", "LAST_SEEN_RESOLUTION_SECONDS"),
        ("core.wake", "EMPTY_MARKER_SECONDS"),
        ("ea_gateway.wake", "EMPTY_MARKER_SECONDS"),
    ):
        module = importlib.import_module(module)
        if hasattr(module, name):
            setattr(module, name, 3600)


STEADY_ENVIRONMENT = {"EA_DEVICE_CACHE_SECONDS": "3600", "HMAC_REPLAY_FENCE_SECONDS": "600"}


def callgrind_child(args, fleet, handler, counters) -> None:
    """Under valgrind: the warm-up uncounted, then the instructions of the measured requests."""
    library = callgrind_library(Path(os.environ["EA_COST_WORK"]))
    hold_off_periodic()
    for endpoint in args.endpoint:
        for environ in environs(endpoint, 3 * len(fleet), fleet, args.query):
            send(handler, environ)
        batch = environs(endpoint, args.requests, fleet, args.query)
        counters.sql = counters.redis = 0
        library.measure_start()
        for environ in batch:
            send(handler, environ)
        library.measure_stop()
        print(f"EA_COST {endpoint} {counters.sql} {counters.redis}", flush=True)


def callgrind_run(args, fleet_file: Path, work: Path) -> None:
    from bench import harness

    for endpoint in args.endpoint or ["bare", "poll", "close-commands"]:
        out = work / f"callgrind.{endpoint}"
        environment = dict(
            os.environ,
            DATABASE_URL=harness.database_url(),
            EA_COST_WORK=str(work),
            **STEADY_ENVIRONMENT,
        )
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p",
            sys.executable, __file__, "--child", str(fleet_file), "--endpoint", endpoint,
            "--requests", str(args.requests), "--query", args.query,
        ]  # fmt: skip
        result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)  # noqa: S603
        line = next((line for line in result.stdout.splitlines() if line.startswith("EA_COST ")), None)
        if line is None:
            raise SystemExit(f"callgrind child failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        _, _, sql, redis_rt = line.split()
        instructions = 0
        for dump in work.glob(f"callgrind.{endpoint}.*"):
            text = dump.read_text()
            if "measured" in text:
                instructions = int(
                    next(row for row in text.splitlines() if row.startswith("totals:")).split()[1]
                )
        print(
            f"{endpoint:15} instructions {instructions / args.requests / 1e6:7.3f} M/req   "
            f"sql {int(sql) / args.requests:.2f}   redis round trips {int(redis_rt) / args.requests:.2f}",
            flush=True,
        )


class Counters:
    def __init__(self) -> None:
        self.sql = 0
        self.redis = 0
        self.statements: dict[str, int] = {}

    def install(self) -> None:
        from django.db import connection
        from redis import connection as redis_connection

        counters = self
        original = redis_connection.AbstractConnection.send_packed_command

        def send_packed_command(self, command, check_health=True):
            counters.redis += 1
            return original(self, command, check_health)

        redis_connection.AbstractConnection.send_packed_command = send_packed_command

        def count(execute, sql, params, many, context):
            counters.sql += 1
            head = " ".join(sql.split()[:6])[:90]
            counters.statements[head] = counters.statements.get(head, 0) + 1
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(count)


def send(handler, environ: dict) -> int:
    environ = dict(environ)
    environ["wsgi.input"] = io.BytesIO(environ.pop("_body"))
    status = []

    def start_response(line, headers, exc_info=None):
        status.append(line)

    for _chunk in handler(environ, start_response):
        pass
    return int(status[0].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", choices=sorted(ENDPOINTS), action="append")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--query", default="", help="query string, e.g. wait=0")
    parser.add_argument("--profile", type=Path, help="directory: a cProfile of one more pass per endpoint")
    parser.add_argument("--sample", type=Path, help="directory: CPU-time stack samples of one more pass")
    parser.add_argument("--steady", action="store_true", help="periodic per-device work held off")
    parser.add_argument("--callgrind", action="store_true", help="instruction counts under valgrind")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help="measured passes per endpoint (min CPU kept)")
    args = parser.parse_args()
    endpoints = args.endpoint or ["bare", "poll", "close-commands"]
    os.environ["EA_THROTTLE_RATE"] = "1000000/s"
    if args.steady:
        os.environ.update(STEADY_ENVIRONMENT)
    setup()
    if args.steady:
        hold_off_periodic()

    from django.core.handlers.wsgi import WSGIHandler

    from bench import ea_bench

    if args.child:
        fleet = [ea_bench.Credentials(*row) for row in json.loads(args.child.read_text())]
        counters = Counters()
        counters.install()
        callgrind_child(args, fleet, WSGIHandler(), counters)
        return

    db, token = ea_bench.claim_redis_db()
    os.environ["REDIS_TEST_DB"] = str(db)
    old_name = ea_bench.create_database()
    try:
        fleet = ea_bench.build_fleet(args.devices)
        from django.db import connection

        connection.close()
        if args.callgrind:
            with tempfile.TemporaryDirectory() as directory:
                fleet_file = Path(directory) / "fleet.json"
                fleet_file.write_text(json.dumps([[d.key_id, d.secret, d.ticket] for d in fleet]))
                callgrind_run(args, fleet_file, Path(directory))
            return
        handler = WSGIHandler()
        counters = Counters()
        counters.install()
        for endpoint in endpoints:
            # Warm-up: every device seen, per-process caches filled.
            for environ in environs(endpoint, 3 * len(fleet), fleet, args.query):
                code = send(handler, environ)
                assert code == 200, (endpoint, code)
            best = None
            for _pass in range(args.repeat):
                batch = environs(endpoint, args.requests, fleet, args.query)
                counters.sql = counters.redis = 0
                counters.statements.clear()
                cpu = time.process_time()
                for environ in batch:
                    code = send(handler, environ)
                    if code != 200:
                        raise SystemExit(f"{endpoint}: answered {code}")
                cpu = time.process_time() - cpu
                row = {
                    "cpu_us": cpu / args.requests * 1e6,
                    "sql": counters.sql / args.requests,
                    "redis_rt": counters.redis / args.requests,
                }
                if best is None or row["cpu_us"] < best["cpu_us"]:
                    best = row
            if args.sample:  # CPU-time sampling (ITIMER_PROF): where the CPU goes, not the waits
                batch = environs(endpoint, args.requests, fleet, args.query)
                stacks: dict[str, int] = {}

                def record(signum, frame, stacks=stacks):
                    names = []
                    while frame is not None:
                        code = frame.f_code
                        names.append(f"{Path(code.co_filename).name}:{code.co_name}")
                        frame = frame.f_back
                    key = ";".join(reversed(names))
                    stacks[key] = stacks.get(key, 0) + 1

                signal.signal(signal.SIGPROF, record)
                signal.setitimer(signal.ITIMER_PROF, 0.0005, 0.0005)
                for environ in batch:
                    send(handler, environ)
                signal.setitimer(signal.ITIMER_PROF, 0, 0)
                args.sample.mkdir(parents=True, exist_ok=True)
                (args.sample / f"{endpoint}.collapsed").write_text(
                    "".join(f"{key} {count}\n" for key, count in stacks.items())
                )
            if args.profile:  # a pass of its own: the profiler's overhead is not in the figures
                batch = environs(endpoint, args.requests, fleet, args.query)
                profiler = cProfile.Profile()
                profiler.enable()
                for environ in batch:
                    send(handler, environ)
                profiler.disable()
                args.profile.mkdir(parents=True, exist_ok=True)
                profiler.dump_stats(args.profile / f"{endpoint}.prof")
            print(
                f"{endpoint:15} cpu {best['cpu_us']:7.0f} us/req   sql {best['sql']:.2f}   "
                f"redis round trips {best['redis_rt']:.2f}",
                flush=True,
            )
            if counters.statements:
                for head, times in sorted(counters.statements.items(), key=lambda item: -item[1])[:8]:
                    print(f"    {times / args.requests:5.2f}  {head}")
    finally:
        from django.db import connection

        connection.close()
        ea_bench.drop_database(old_name)
        ea_bench.release_redis_db(token)


if __name__ == "__main__":
    main()
