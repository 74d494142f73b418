"""The Veilstop request signature, in the standard library only.

Both sides use this module: the server to verify, the reference EA client to
sign. ``docs/ea-protocol.md`` states the same algorithm in prose with test
vectors (as data in ``vectors.json``), so any other implementation (MQL5,
C#, ...) can check itself.

    canonical = METHOD "\\n" PATH "\\n" CANONICAL_QUERY "\\n" TIMESTAMP "\\n" NONCE "\\n" SHA256_HEX(body)
    signature = lowercase hex HMAC-SHA256(secret (UTF-8), canonical (UTF-8))

CANONICAL_QUERY: the query string's ``key=value`` pairs, each part decoded
and then percent-encoded (RFC 3986: everything but ``A-Z a-z 0-9 - _ . ~``,
upper-case hex), sorted by key then value, joined with ``&``; empty when
there is no query.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, quote

HEADER_KEY = "X-Device-Key"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"
HEADER_SERVER_TIME = "X-Server-Time"


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(query_string: str) -> str:
    pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=False)
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(pairs))


def canonical_string(
    *, method: str, path: str, query_string: str, timestamp: str, nonce: str, body: bytes
) -> str:
    return "\n".join(
        [
            method.upper(),
            path,
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
