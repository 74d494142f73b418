"""HMAC authentication: tampering, skew, replay, revocation, Redis outage, throttling."""

from __future__ import annotations

import time

import pytest
import time_machine
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.redis import _client_for
from ea_gateway.services import device_revoke, device_rotate_secret
from ea_protocol import signing
from signals_app.events import Actor
from tests.ea_helpers import ea_for, encode, make_device, signed_headers

pytestmark = pytest.mark.django_db

GENERIC_401 = {"error": {"code": "not_authenticated", "message": "Authentication failed."}}
HEARTBEAT = "/api/v1/client/heartbeat"
BODY = encode({"balance": "1000.00", "equity": "1000.00", "open_tickets": []})


@pytest.fixture
def ea(redis_client):
    return ea_for(make_device())


def _send(ea, method: str, path: str, body: bytes, headers: dict, query_string: str = ""):
    url = f"{path}?{query_string}" if query_string else path
    return ea.http.generic(method, url, body, content_type="application/json", headers=headers)


def _assert_generic_401(response) -> None:
    assert response.status_code == 401
    assert response.json() == GENERIC_401
    assert abs(int(response.headers[signing.HEADER_SERVER_TIME]) - time.time()) < 5
    assert response.headers["WWW-Authenticate"].startswith("HMAC-SHA256")


def test_a_valid_signature_is_accepted(ea):
    response = ea.heartbeat({"balance": "1000.00", "equity": "1000.00", "open_tickets": []})
    assert response.status_code == 200
    assert signing.HEADER_SERVER_TIME in response.headers


def _flip(text: str, index: int) -> str:
    index %= len(text)
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    part=st.sampled_from(["method", "path", "query", "body", "timestamp", "nonce"]), index=st.integers(0, 500)
)
def test_any_single_changed_byte_is_refused(ea, part, index):
    # given: a request signed for one thing ...
    signed = {"method": "POST", "path": HEARTBEAT, "query": "a=1&b=2", "body": BODY.decode()}
    headers = signed_headers(
        key=ea.device.key_id,
        secret=ea.credentials.secret,
        method=signed["method"],
        path=signed["path"],
        query_string=signed["query"],
        body=signed["body"].encode(),
    )
    sent = dict(signed)
    # ... when one byte of what is sent differs from what was signed
    if part in ("timestamp", "nonce"):
        header = signing.HEADER_TIMESTAMP if part == "timestamp" else signing.HEADER_NONCE
        if part == "timestamp":
            headers[header] = str(int(headers[header]) + 1 + index % 50)
        else:
            headers[header] = _flip(headers[header], index)
    else:
        sent[part] = _flip(sent[part], index)
    if part in ("method", "path"):
        # Routing comes before authentication, so send the real request and
        # sign the altered one: the verifier sees the same mismatch.
        sent, signed_altered = signed, sent
        headers = {
            **headers,
            signing.HEADER_SIGNATURE: signing.sign(
                ea.credentials.secret,
                signing.canonical_string(
                    method=signed_altered["method"],
                    path=signed_altered["path"],
                    query_string=signed_altered["query"],
                    timestamp=headers[signing.HEADER_TIMESTAMP],
                    nonce=headers[signing.HEADER_NONCE],
                    body=signed_altered["body"].encode(),
                ),
            ),
        }

    response = _send(ea, sent["method"], sent["path"], sent["body"].encode(), headers, sent["query"])

    # then
    _assert_generic_401(response)


@pytest.mark.parametrize(("offset", "status"), [(300, 200), (-300, 200), (301, 401), (-301, 401)])
def test_clock_skew_boundaries(ea, offset, status):
    now = int(time.time())
    headers = signed_headers(
        key=ea.device.key_id,
        secret=ea.credentials.secret,
        method="POST",
        path=HEARTBEAT,
        body=BODY,
        timestamp=now + offset,
    )
    with time_machine.travel(now, tick=False):
        response = _send(ea, "POST", HEARTBEAT, BODY, headers)
    assert response.status_code == status


def test_a_replayed_request_is_refused(ea):
    headers = signed_headers(
        key=ea.device.key_id, secret=ea.credentials.secret, method="POST", path=HEARTBEAT, body=BODY
    )
    assert _send(ea, "POST", HEARTBEAT, BODY, headers).status_code == 200
    _assert_generic_401(_send(ea, "POST", HEARTBEAT, BODY, headers))


def test_a_bad_signature_does_not_burn_the_nonce(ea):
    headers = signed_headers(
        key=ea.device.key_id, secret=ea.credentials.secret, method="POST", path=HEARTBEAT, body=BODY
    )
    forged = {**headers, signing.HEADER_SIGNATURE: "0" * 64}

    _assert_generic_401(_send(ea, "POST", HEARTBEAT, BODY, forged))
    assert _send(ea, "POST", HEARTBEAT, BODY, headers).status_code == 200


def test_revoked_and_rotated_credentials_are_refused(ea):
    old_secret = ea.credentials.secret
    rotated = device_rotate_secret(device=ea.device, by=Actor.system("t"))
    headers = signed_headers(
        key=ea.device.key_id, secret=old_secret, method="POST", path=HEARTBEAT, body=BODY
    )
    _assert_generic_401(_send(ea, "POST", HEARTBEAT, BODY, headers))

    headers = signed_headers(
        key=ea.device.key_id, secret=rotated.secret, method="POST", path=HEARTBEAT, body=BODY
    )
    assert _send(ea, "POST", HEARTBEAT, BODY, headers).status_code == 200

    device_revoke(device=ea.device, by=Actor.system("t"))
    headers = signed_headers(
        key=ea.device.key_id, secret=rotated.secret, method="POST", path=HEARTBEAT, body=BODY
    )
    _assert_generic_401(_send(ea, "POST", HEARTBEAT, BODY, headers))


def test_an_unknown_key_gets_the_same_401(ea):
    headers = signed_headers(key="vsk_nobody", secret="whatever", method="POST", path=HEARTBEAT, body=BODY)
    _assert_generic_401(_send(ea, "POST", HEARTBEAT, BODY, headers))


@pytest.mark.parametrize(
    "override",
    [
        {signing.HEADER_KEY: ""},
        {signing.HEADER_KEY: "k" * 10_000},
        {signing.HEADER_KEY: "ключ"},
        {signing.HEADER_KEY: "key with spaces"},
        {signing.HEADER_TIMESTAMP: "abc"},
        {signing.HEADER_TIMESTAMP: "-5"},
        {signing.HEADER_TIMESTAMP: "9" * 40},
        {signing.HEADER_TIMESTAMP: "1.5"},
        {signing.HEADER_NONCE: "short"},
        {signing.HEADER_NONCE: "n" * 5000},
        {signing.HEADER_NONCE: "bad nonce with spaces!!"},
        {signing.HEADER_SIGNATURE: "zz" * 32},
        {signing.HEADER_SIGNATURE: "A" * 64},
        {signing.HEADER_SIGNATURE: "0" * 10_000},
    ],
)
def test_malformed_or_oversized_headers_get_401_never_500(ea, override):
    headers = signed_headers(
        key=ea.device.key_id, secret=ea.credentials.secret, method="POST", path=HEARTBEAT, body=BODY
    )
    _assert_generic_401(_send(ea, "POST", HEARTBEAT, BODY, {**headers, **override}))


@pytest.mark.parametrize(
    "missing", [signing.HEADER_KEY, signing.HEADER_TIMESTAMP, signing.HEADER_NONCE, signing.HEADER_SIGNATURE]
)
def test_missing_headers_get_401(ea, missing):
    headers = signed_headers(
        key=ea.device.key_id, secret=ea.credentials.secret, method="POST", path=HEARTBEAT, body=BODY
    )
    del headers[missing]
    _assert_generic_401(_send(ea, "POST", HEARTBEAT, BODY, headers))


def test_redis_down_fails_closed_with_503(ea, unused_tcp_port):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{unused_tcp_port}/0"):
        response = ea.heartbeat({"balance": "1", "equity": "1", "open_tickets": []})
    _client_for.cache_clear()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


@override_settings(EA_THROTTLE_RATE="3/min")
def test_each_device_is_throttled_with_retry_after(ea):
    other = ea_for(make_device())
    statuses = [
        ea.heartbeat({"balance": "1", "equity": "1", "open_tickets": []}).status_code for _ in range(3)
    ]
    throttled = ea.heartbeat({"balance": "1", "equity": "1", "open_tickets": []})

    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["Retry-After"]) <= 60
    assert throttled.json()["error"]["code"] == "throttled"
    assert other.heartbeat({"balance": "1", "equity": "1", "open_tickets": []}).status_code == 200
