"""SignedTransport against a real local HTTP server that verifies signatures."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from ea_client.transport import ProtocolError, SignedTransport, UnavailableError
from tests.ea_client.signed_server import (
    DROP,
    KEY,
    NONCE_PATTERN,
    SECRET,
    SERVER_NOW,
    Reply,
    Seen,
    Serve,
    SignedServer,
    Sleeps,
    error,
)


def transport_for(server: SignedServer, sleeps: Sleeps, **options: object) -> SignedTransport:
    options.setdefault("clock", lambda: SERVER_NOW)
    options.setdefault("timeout", 5)
    return SignedTransport(server.url, KEY, SECRET, sleep=sleeps, **options)  # type: ignore[arg-type]


def test_a_get_is_signed_as_the_server_verifies_it(server: SignedServer, sleeps: Sleeps) -> None:
    transport = transport_for(server, sleeps)

    response = transport.request(
        "GET", "/api/v1/client/poll", query={"sym": "XAU/USD", "b": "2", "a": ["1", "0"]}
    )

    assert response.status == 200
    assert response.json == {}
    [seen] = server.seen
    assert seen.authenticated
    assert seen.method == "GET"
    assert seen.path == "/api/v1/client/poll"
    assert seen.body == b""
    assert seen.headers["x-device-key"] == KEY
    assert seen.timestamp == str(int(SERVER_NOW))
    assert NONCE_PATTERN.fullmatch(seen.nonce)
    assert sorted(seen.query_string.split("&")) == ["a=0", "a=1", "b=2", "sym=XAU%2FUSD"]


def test_a_post_sends_and_signs_compact_utf8_json(server: SignedServer, sleeps: Sleeps) -> None:
    transport = transport_for(server, sleeps)
    body = {"approval_id": 43, "status": "failed", "error": "рынок закрыт €", "volume": Decimal("0.10")}

    transport.request("POST", "/api/v1/client/ack", body=body)

    [seen] = server.seen
    assert seen.authenticated
    assert seen.headers["content-type"] == "application/json"
    assert (
        seen.body == '{"approval_id":43,"status":"failed","error":"рынок закрыт €","volume":"0.10"}'.encode()
    )


def test_every_request_gets_a_fresh_nonce(server: SignedServer, sleeps: Sleeps) -> None:
    transport = transport_for(server, sleeps)

    for _ in range(5):
        transport.request("GET", "/api/v1/client/poll")

    assert len({seen.nonce for seen in server.seen}) == 5
    assert all(seen.authenticated for seen in server.seen)


def test_a_path_prefix_in_the_server_url_is_signed(server: SignedServer, sleeps: Sleeps) -> None:
    transport = SignedTransport(
        server.url + "/veilstop/", KEY, SECRET, clock=lambda: SERVER_NOW, sleep=sleeps
    )

    transport.request("GET", "/api/v1/client/poll")

    [seen] = server.seen
    assert seen.path == "/veilstop/api/v1/client/poll"
    assert seen.authenticated


@pytest.mark.parametrize("prefix", ["/veil stop/café", "/veil%20stop/caf%C3%A9", "/veil%20stop/caf%c3%a9"])
def test_a_prefix_that_needs_encoding_is_requested_and_signed_encoded_once(
    server: SignedServer, sleeps: Sleeps, prefix: str
) -> None:
    transport = SignedTransport(server.url + prefix, KEY, SECRET, clock=lambda: SERVER_NOW, sleep=sleeps)

    transport.request("GET", "/api/v1/client/poll")

    [seen] = server.seen
    assert seen.path == "/veil%20stop/caf%C3%A9/api/v1/client/poll"
    assert seen.authenticated


def test_a_401_corrects_the_clock_and_retries_once(server: SignedServer, sleeps: Sleeps) -> None:
    # given a local clock two days behind the server's
    transport = transport_for(server, sleeps, clock=lambda: SERVER_NOW - 2 * 86400 + 0.4)

    # when
    response = transport.request("POST", "/api/v1/client/heartbeat", body={"balance": "1"})

    # then the first attempt was refused and the retry carried the server's time
    assert response.status == 200
    first, retry = server.seen
    assert not first.authenticated
    assert retry.authenticated
    assert abs(int(retry.timestamp) - SERVER_NOW) <= 1
    assert retry.nonce != first.nonce
    assert retry.body == first.body
    assert transport.clock_offset == pytest.approx(2 * 86400 - 0.4)
    assert sleeps == []

    # and the offset is kept: the next request passes at once
    transport.request("GET", "/api/v1/client/poll")
    assert len(server.seen) == 3
    assert server.seen[2].authenticated


def test_a_second_401_is_a_protocol_error(server: SignedServer, sleeps: Sleeps) -> None:
    transport = SignedTransport(server.url, KEY, "not-the-secret", clock=lambda: SERVER_NOW, sleep=sleeps)

    with pytest.raises(ProtocolError) as raised:
        transport.request("GET", "/api/v1/client/poll")

    assert raised.value.status == 401
    assert raised.value.code == "not_authenticated"
    assert len(server.seen) == 2
    assert not any(seen.authenticated for seen in server.seen)
    assert sleeps == []


def test_the_secret_is_not_in_the_transports_repr() -> None:
    transport = SignedTransport("http://127.0.0.1:1", KEY, SECRET)

    assert SECRET not in repr(transport)
    assert KEY in repr(transport)


def test_503_then_200_resends_the_same_body_with_a_new_nonce(serve: Serve, sleeps: Sleeps) -> None:
    server = serve(error(503, "unavailable", "busy"), error(503, "unavailable", "busy"))
    body = {
        "approval_id": 7,
        "status": "placed",
        "broker_ticket": "123",
        "entry_price": "2650.6",
        "volume": "0.10",
    }

    response = transport_for(server, sleeps).request("POST", "/api/v1/client/ack", body=body)

    assert response.status == 200
    assert len(server.seen) == 3
    assert all(seen.authenticated for seen in server.seen)
    assert len({seen.body for seen in server.seen}) == 1
    assert json.loads(server.seen[0].body) == body
    assert len({seen.nonce for seen in server.seen}) == 3
    assert sleeps == [0.5, 1.0]


def test_a_timeout_is_retried_with_the_same_body(serve: Serve, sleeps: Sleeps) -> None:
    answered: list[Seen] = []

    def slow_first(seen: Seen) -> Reply:
        answered.append(seen)
        if len(answered) == 1:
            time.sleep(1.0)
        return 200, {}, {"approval_id": 7, "status": "failed"}

    server = serve(handler=slow_first)
    transport = transport_for(server, sleeps, timeout=0.3)

    response = transport.request("POST", "/api/v1/client/ack", body={"approval_id": 7, "status": "failed"})

    assert response.json == {"approval_id": 7, "status": "failed"}
    assert len(server.seen) == 2
    assert server.seen[0].body == server.seen[1].body
    assert server.seen[0].nonce != server.seen[1].nonce
    assert sleeps == [0.5]


def test_429_waits_retry_after_capped(serve: Serve, sleeps: Sleeps) -> None:
    server = serve(
        error(429, "throttled", "slow down", **{"Retry-After": "2"}),
        error(429, "throttled", "slow down", **{"Retry-After": "3600"}),
    )

    response = transport_for(server, sleeps, retry_after_cap=30.0).request("GET", "/api/v1/client/poll")

    assert response.status == 200
    assert sleeps == [2.0, 30.0]


def test_503_waits_its_retry_after_like_a_replay_fence_asks(serve: Serve, sleeps: Sleeps) -> None:
    # A 503 with Retry-After (the server's replay fence after Redis lost its nonces says
    # when the EA's clock will have passed it) is waited out, not backed off at 0.5 s.
    server = serve(error(503, "unavailable", "fenced", **{"Retry-After": "7"}))

    response = transport_for(server, sleeps).request("GET", "/api/v1/client/poll")

    assert response.status == 200
    assert sleeps == [7.0]
    first, second = server.seen
    assert second.authenticated
    assert first.headers["x-nonce"] != second.headers["x-nonce"]


def test_5xx_gives_up_after_max_retries(serve: Serve, sleeps: Sleeps) -> None:
    server = serve(*[error(503, "unavailable", "down")] * 10)
    transport = transport_for(server, sleeps, max_retries=2)

    with pytest.raises(UnavailableError) as raised:
        transport.request("POST", "/api/v1/client/heartbeat", body={"balance": "1"})

    assert raised.value.status == 503
    assert len(server.seen) == 3
    assert sleeps == [0.5, 1.0]


def test_backoff_is_capped(serve: Serve, sleeps: Sleeps) -> None:
    server = serve(*[error(500, "server_error")] * 6)

    transport_for(server, sleeps, max_retries=6, backoff_cap=3.0).request("GET", "/api/v1/client/poll")

    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_409_is_a_protocol_error_and_not_retried(serve: Serve, sleeps: Sleeps) -> None:
    server = serve(error(409, "ack_conflict", "a different result is recorded"))

    with pytest.raises(ProtocolError) as raised:
        transport_for(server, sleeps).request("POST", "/api/v1/client/ack", body={"approval_id": 1})

    assert (raised.value.status, raised.value.code, raised.value.message) == (
        409,
        "ack_conflict",
        "a different result is recorded",
    )
    assert len(server.seen) == 1
    assert sleeps == []


def test_validation_fields_are_kept(serve: Serve, sleeps: Sleeps) -> None:
    server = serve(
        (400, {}, {"error": {"code": "invalid", "message": "bad", "fields": {"volume": ["required"]}}})
    )

    with pytest.raises(ProtocolError) as raised:
        transport_for(server, sleeps).request("POST", "/api/v1/client/ack", body={})

    assert raised.value.fields == {"volume": ["required"]}
    assert len(server.seen) == 1


def test_a_non_json_error_still_raises_with_its_status(serve: Serve, sleeps: Sleeps) -> None:
    server = serve((404, {}, b"<html>Not Found</html>"))

    with pytest.raises(ProtocolError) as raised:
        transport_for(server, sleeps).request("GET", "/api/v1/client/poll")

    assert raised.value.status == 404
    assert raised.value.code == "http_404"


def test_a_non_json_success_is_a_protocol_error(serve: Serve, sleeps: Sleeps) -> None:
    server = serve((200, {}, b"<html>captive portal</html>"))

    with pytest.raises(ProtocolError) as raised:
        transport_for(server, sleeps).request("GET", "/api/v1/client/poll")

    assert raised.value.code == "invalid_response"


def test_a_redirect_is_not_followed(serve: Serve, sleeps: Sleeps) -> None:
    server = serve((302, {"Location": "http://example.invalid/"}, {}))

    with pytest.raises(ProtocolError) as raised:
        transport_for(server, sleeps).request("GET", "/api/v1/client/poll")

    assert raised.value.status == 302
    assert len(server.seen) == 1


def test_connection_refused_is_retried_then_unavailable(unused_tcp_port: int, sleeps: Sleeps) -> None:
    transport = SignedTransport(
        f"http://127.0.0.1:{unused_tcp_port}", KEY, SECRET, max_retries=2, sleep=sleeps
    )

    with pytest.raises(UnavailableError) as raised:
        transport.request("GET", "/api/v1/client/poll")

    assert raised.value.status is None
    assert "connection failed" in str(raised.value)
    assert sleeps == [0.5, 1.0]


def test_a_lost_response_is_retried_with_the_same_body(serve: Serve, sleeps: Sleeps) -> None:
    server = serve(DROP)

    response = transport_for(server, sleeps).request("POST", "/api/v1/client/ack", body={"approval_id": 3})

    assert response.status == 200
    assert len(server.seen) == 2
    assert server.seen[0].body == server.seen[1].body
    assert server.seen[0].nonce != server.seen[1].nonce


def test_a_bad_server_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        SignedTransport("ftp://example.com", KEY, SECRET)
