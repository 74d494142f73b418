"""Schemathesis against our own OpenAPI schema: the six EA/feed operations, in-process over WSGI.

The schema is the one GET /api/v1/schema serves; requests go through ``config.wsgi.application``
against the real PostgreSQL and Redis. A ``before_call`` hook signs every generated request as it
goes on the wire (method, path, query string, body bytes after serialisation) with a real
device's credentials: the EA device for /client/*, the feed device for /feed/quotes.

Each response is checked for: no server error, a documented status code, a documented content
type, and a body that matches the documented schema. ``test_error_fields_of_nested_input_match_the_schema``
keeps a first finding fixed: a 400 for a list or nested input carries an object in
``error.fields.<name>``, which the schema once did not allow.

The tests are transactional: the WSGI handler runs in this thread on the same connection, and its
request_finished signal (close_old_connections) would close a connection held in a test atomic block.
"""

from __future__ import annotations

import secrets
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
import schemathesis
from django.core.signals import got_request_exception
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import EnvironBuilder

from ea_gateway.choices import DeviceRole
from ea_gateway.services import Fill, IssuedCredentials, approval_ack
from ea_protocol import signing
from positions.choices import CloseReason
from positions.closes import close_command_request
from positions.models import OpenPosition
from signals_app.events import Actor
from tests.ea_helpers import make_device
from tests.factories import ClientFactory, make_signal

SCHEMA_URL = "/api/v1/schema?format=json"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 40
# operation id -> (method, path, whether it takes a JSON body)
OPERATIONS = {
    "client_poll": ("GET", "/api/v1/client/poll", False),
    "client_ack": ("POST", "/api/v1/client/ack", True),
    "client_close_commands": ("GET", "/api/v1/client/close-commands", False),
    "client_close_ack": ("POST", "/api/v1/client/close-ack", True),
    "client_heartbeat": ("POST", "/api/v1/client/heartbeat", True),
    "feed_quotes": ("POST", "/api/v1/feed/quotes", True),
}
SEEDED_SYMBOLS = ["XAUUSD", "EURUSD"]
VOLUMES = ["0.01", "0.10"]  # at most what the world's approvals and positions hold
HIGH_RATES = {"EA_THROTTLE_RATE": "100000/min", "FEED_THROTTLE_RATE": "100000/min"}


@pytest.fixture(scope="module")
def api_schema(request, django_db_blocker):
    from config.wsgi import application

    # Fetched through the whole middleware stack, which may touch the (test) database:
    # whichever test of the module asks first, marked for the database or not.
    request.getfixturevalue("django_db_setup")
    with django_db_blocker.unblock():
        return schemathesis.openapi.from_wsgi(SCHEMA_URL, application, config=schemathesis.Config())


@dataclass
class Signer:
    """The credentials the ``before_call`` hook signs with, and what it signed."""

    ea: IssuedCredentials | None = None
    feed: IssuedCredentials | None = None
    signed: int = 0
    last_body: bytes = b""

    def credentials_for(self, path: str) -> IssuedCredentials:
        credentials = self.feed if path.startswith("/api/v1/feed/") else self.ea
        assert credentials is not None, f"no device to sign {path} with"
        return credentials


def _wire_request(case) -> tuple[str, str, str, bytes]:
    """Method, path, query string and body bytes exactly as the WSGI transport will send them.

    ``as_transport_kwargs`` is the transport's own serialisation of the case; the transport hands
    those same arguments to Werkzeug, whose EnvironBuilder turns them into the WSGI environ.
    """
    kwargs = case.as_transport_kwargs()
    kwargs.pop("headers", None)
    builder = EnvironBuilder(**kwargs)
    try:
        environ = builder.get_environ()
        body = environ["wsgi.input"].read()
    finally:
        builder.close()
    return environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""), body


@pytest.fixture
def signer():
    state = Signer()

    def before_call(context, case, kwargs):
        method, path, query_string, body = _wire_request(case)
        credentials = state.credentials_for(path)
        timestamp = str(int(time.time()))
        nonce = secrets.token_urlsafe(24)  # 32 chars of [A-Za-z0-9_-], fresh for every call
        canonical = signing.canonical_string(
            method=method, path=path, query_string=query_string, timestamp=timestamp, nonce=nonce, body=body
        )
        case.headers = {
            **(case.headers or {}),
            signing.HEADER_KEY: credentials.device.key_id,
            signing.HEADER_TIMESTAMP: timestamp,
            signing.HEADER_NONCE: nonce,
            signing.HEADER_SIGNATURE: signing.sign(credentials.secret, canonical),
        }
        state.signed += 1
        state.last_body = body

    # before_call is a global-scope hook in schemathesis; registered for this test only.
    schemathesis.hook("before_call")(before_call)
    try:
        yield state
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)


@dataclass
class World:
    approvals: list[int]  # the EA client's: some approved and waiting, some already filled
    commands: list[int]  # one close command for each filled approval's position


@pytest.fixture
def world(redis_client, signer) -> World:
    client = ClientFactory(auto_approve=True, default_volume=Decimal("0.10"))
    signer.ea = make_device(client=client)
    signer.feed = make_device(role=DeviceRole.FEED, name="feed")
    approvals, commands = [], []
    for entry in ("2650.50", "2651.50", "2652.50"):
        signal = make_signal(symbol="XAUUSD", side="buy", entry=entry, sl="2640.00", tp="2670.00")
        approvals.append(signal.approvals.get(client=client).pk)
    for ticket in ("50001", "50003"):
        signal = make_signal(symbol="EURUSD", side="sell", entry="1.08500", sl="1.09000", tp="1.08000")
        approval = signal.approvals.get(client=client)
        fill = approval_ack(
            device=signer.ea.device,
            approval_id=approval.pk,
            fill=Fill(broker_ticket=ticket, entry_price=Decimal("1.08490"), volume=Decimal("0.10")),
        )
        command = close_command_request(
            position=OpenPosition.objects.get(pk=fill.position_id),
            reason=CloseReason.MANUAL,
            by=Actor.system("tests"),
        )
        approvals.append(approval.pk)
        commands.append(command.pk)
    return World(approvals=approvals, commands=commands)


def _steer(operation_id: str, case, data, world: World) -> None:
    """Three times in four, point a generated body at the world's rows, so the success and
    conflict paths get fuzzed too: random ids alone only ever reach 404, random instruments an
    unknown-instrument 400, and a random volume is mostly above what was approved. The rules
    the schema states only in words (ask not below bid, a quote not from the future) are kept
    too. Everything else is as the schema generated it (test_schema_acceptance: the schema is
    as strict as the server)."""
    if case.query and "wait" in case.query:
        # A generated long-poll wait (0-30 s) would hold each case that long when nothing is
        # due; waiting is tested in test_longpoll*.py, and every allowed wait is checked
        # against the view in test_schema_acceptance.py.
        case.query["wait"] = 0
    body = case.body
    if not isinstance(body, dict) or data.draw(st.integers(0, 3), label="steer") == 0:
        return
    if operation_id == "client_ack":
        body["approval_id"] = data.draw(st.sampled_from(world.approvals), label="approval_id")
        if "volume" in body:
            body["volume"] = data.draw(st.sampled_from(VOLUMES), label="volume")
    elif operation_id == "client_close_ack":
        body["command_id"] = data.draw(st.sampled_from(world.commands), label="command_id")
        if "closed_volume" in body:
            body["closed_volume"] = data.draw(st.sampled_from(VOLUMES), label="closed_volume")
    elif operation_id == "feed_quotes":
        for quote in body["quotes"]:
            quote["instrument"] = data.draw(st.sampled_from(SEEDED_SYMBOLS), label="instrument")
            quote["ts"] = time.time() - data.draw(st.floats(0, 3600), label="age")
            if Decimal(quote["ask"]) < Decimal(quote["bid"]):
                quote["bid"], quote["ask"] = quote["ask"], quote["bid"]


@dataclass
class Run:
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    calls: int = 0


def _fuzz(api_schema, world: World, signer: Signer, operation_id: str, mode: GenerationMode) -> Run:
    method, path, _ = OPERATIONS[operation_id]
    operation = api_schema[path][method]
    run = Run()
    tracebacks: list[str] = []

    def on_exception(sender, request=None, **kwargs):
        tracebacks.append(traceback.format_exc())

    @settings(
        max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def fuzz(case, data):
        if mode == GenerationMode.POSITIVE:
            _steer(operation_id, case, data, world)
        tracebacks.clear()
        response = case.call()
        run.calls += 1
        run.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            unexpected = list(group.exceptions)
            if unexpected:
                run.failures.append(
                    f"{method} {path} body={signer.last_body[:500]!r}\n"
                    f"-> {response.status_code} {response.content[:1000]!r}\n"
                    + "\n".join(f"   {type(f).__name__}: {f.title}: {f.message}" for f in unexpected)
                    + "".join(f"\n{text}" for text in tracebacks)
                )

    got_request_exception.connect(on_exception)
    try:
        with override_settings(**HIGH_RATES):
            fuzz()
    finally:
        got_request_exception.disconnect(on_exception)
    return run


def _assert_clean(run: Run, signer: Signer) -> None:
    report = f"statuses {dict(run.statuses)}"
    assert not run.failures, f"{len(run.failures)} failing case(s); {report}\n\n" + "\n\n".join(
        run.failures[:10]
    )
    # Every call went through the hook, and every signature was accepted.
    assert run.calls > 0
    assert signer.signed == run.calls, report
    assert run.statuses[401] == 0, report


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("operation_id", list(OPERATIONS))
def test_generated_requests_conform(api_schema, world, signer, operation_id):
    run = _fuzz(api_schema, world, signer, operation_id, GenerationMode.POSITIVE)

    _assert_clean(run, signer)
    successes = sum(count for status, count in run.statuses.items() if 200 <= status < 300)
    assert successes > 0, f"no 2xx in {run.calls} cases: {dict(run.statuses)}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("operation_id", [name for name, (_, _, body) in OPERATIONS.items() if body])
def test_invalid_bodies_are_refused_cleanly(api_schema, world, signer, operation_id):
    """Bodies that break the schema: validly signed, and answered with a 4xx, never a 5xx. (The two
    GETs take no input but the auth headers, which the hook owns, so they have nothing to negate.)"""
    run = _fuzz(api_schema, world, signer, operation_id, GenerationMode.NEGATIVE)

    _assert_clean(run, signer)
    assert any(400 <= status < 500 for status in run.statuses), dict(run.statuses)


@pytest.mark.django_db(transaction=True)
def test_only_a_correct_signature_gets_through(api_schema, world, signer):
    """The fuzz tests' "no 401" would mean nothing if the server took any signature."""
    operation = api_schema["/api/v1/client/heartbeat"]["POST"]
    body = {"balance": "1000.00", "equity": "990.50", "open_tickets": ["50001"]}

    with override_settings(**HIGH_RATES):
        signed = operation.Case(body=body, media_type="application/json").call()
        signer.ea = IssuedCredentials(device=signer.ea.device, secret="not-the-secret")
        wrong_secret = operation.Case(body=body, media_type="application/json").call()

    assert signed.status_code == 200, signed.content
    assert wrong_secret.status_code == 401
    assert signer.signed == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/feed/quotes", {"quotes": []}),
        ("/api/v1/feed/quotes", {"quotes": [{"instrument": "EURUSD", "bid": "0", "ask": "1.1", "ts": 1e9}]}),
        ("/api/v1/client/heartbeat", {"balance": "1.00", "equity": "1.00", "open_tickets": ["50001", ""]}),
    ],
    ids=["feed-empty-batch", "feed-bad-quote", "heartbeat-blank-ticket"],
)
def test_error_fields_of_nested_input_match_the_schema(api_schema, world, signer, path, body):
    case = api_schema[path]["POST"].Case(body=body, media_type="application/json")
    with override_settings(**HIGH_RATES):
        response = case.call()

    assert response.status_code == 400, response.content
    case.validate_response(response, checks=[response_schema_conformance])
