"""The PATH an EA signs: the path as requested, percent-encoded or not (docs/ea-protocol.md,
section 3, step 2). Django sees the path decoded, as any WSGI server hands it over."""

from __future__ import annotations

import pytest

from tests.ea_helpers import ea_for, make_device, signed_headers

pytestmark = pytest.mark.django_db

POLL = "/api/v1/client/poll"
# A deployment published under a prefix with a space and a non-ASCII character: the WSGI
# server strips it into SCRIPT_NAME (decoded; WSGI strings carry bytes as latin-1).
PREFIX = "/veil stop/café"
SCRIPT_NAME = PREFIX.encode("utf-8").decode("latin-1")


@pytest.fixture
def ea(redis_client):
    return ea_for(make_device())


def _get(ea, *, requested: str, signed: str, **environ):
    headers = signed_headers(key=ea.device.key_id, secret=ea.credentials.secret, method="GET", path=signed)
    return ea.http.generic("GET", requested, headers=headers, **environ)


@pytest.mark.parametrize(
    "written",
    [
        "/api/v1/client/poll",  # not encoded
        "/api/v1/client/%70oll",  # an unreserved character encoded
        "/api/v1/%63lient/%70%6F%6c%6C",  # several, either case of hex
    ],
)
def test_the_path_is_accepted_however_the_ea_encodes_it(ea, written):
    # The EA signs exactly what it requests.
    assert _get(ea, requested=written, signed=written).status_code == 200


@pytest.mark.parametrize(
    "signed",
    [
        "/veil stop/café/api/v1/client/poll",  # the EA signs the text it built the URL from
        "/veil%20stop/caf%C3%A9/api/v1/client/poll",  # or the path as it went on the wire
        "/veil%20stop/caf%c3%a9/api/v1/client/poll",  # with lower-case hex
    ],
)
def test_a_prefix_that_needs_encoding_is_accepted_encoded_or_not(ea, signed):
    response = _get(ea, requested=POLL, signed=signed, SCRIPT_NAME=SCRIPT_NAME)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "signed",
    [
        "/veil%2520stop/caf%C3%A9/api/v1/client/poll",  # encoded twice: another path
        "/veil+stop/caf%C3%A9/api/v1/client/poll",  # "+" is not a space in a path
        "/api/v1/client/poll",  # the prefix left out
    ],
)
def test_a_path_that_decodes_to_another_one_is_refused(ea, signed):
    response = _get(ea, requested=POLL, signed=signed, SCRIPT_NAME=SCRIPT_NAME)
    assert response.status_code == 401
