"""The Veilstop request signature, in the standard library only.

Both sides use this module: the server to verify, the reference EA client to
sign. ``docs/ea-protocol.md`` states the same algorithm in prose with test
vectors (as data in ``vectors.json``), so any other implementation (MQL5,
C#, ...) can check itself.

    canonical = METHOD "\\n" PATH "\\n" CANONICAL_QUERY "\\n" TIMESTAMP "\\n" NONCE "\\n" SHA256_HEX(body)
    signature = lowercase hex HMAC-SHA256(secret (UTF-8), canonical (UTF-8))

PATH: the path as requested, percent-decoded (UTF-8) and encoded again the
same way, except that ``/`` is kept: ``/veil%20stop/caf%c3%a9/api/v1/client/%70oll``
and ``/veil stop/café/api/v1/client/poll`` are both
``/veil%20stop/caf%C3%A9/api/v1/client/poll``. A server that sees the path
decoded (WSGI) encodes it (``encode_path``) and gets the same line.

CANONICAL_QUERY: the query string's ``key=value`` pairs, each part decoded
and then percent-encoded (RFC 3986: everything but ``A-Z a-z 0-9 - _ . ~``,
upper-case hex), sorted by key then value, joined with ``&``; empty when
there is no query.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qsl, quote, unquote

HEADER_KEY = "X-Device-Key"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"
HEADER_SERVER_TIME = "X-Server-Time"


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


# A path of these characters only is its own canonical form (every path the API serves).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]*")


def encode_path(decoded_path: str) -> str:
    """The PATH line from a path already percent-decoded (a WSGI server's)."""
    if _PLAIN_PATH.fullmatch(decoded_path):
        return decoded_path
    return quote(decoded_path, safe="/-_.~")


def canonical_path(path: str) -> str:
    """The PATH line from the path as requested (percent-encoded or not)."""
    if _PLAIN_PATH.fullmatch(path):
        return path
    return encode_path(unquote(path, encoding="utf-8", errors="replace"))


def canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=False)
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(pairs))


def canonical_string(
    *, method: str, path: str, query_string: str, timestamp: str, nonce: str, body: bytes
) -> str:
    return "\n".join(
        [
            method.upper(),
            canonical_path(path),
            canonical_query(query_string),
            timestamp,
            nonce,
            hashlib.sha256(body).hexdigest(),
        ]
    )


def sign(secret: str, canonical: str) -> str:
    return hmac.new(secret.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_matches(secret: str, canonical: str, signature: str) -> bool:
    """Constant-time comparison of a presented signature with the expected one."""
    return hmac.compare_digest(sign(secret, canonical).encode("ascii"), signature.encode("ascii", "replace"))
