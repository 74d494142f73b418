"""The test vectors in docs/ea-protocol.md are right, checked two ways.

Each vector is recomputed with ``ea_protocol.signing`` (the code both sides
run) and with a from-scratch re-implementation of the documented algorithm
below, so the document, the shared code and the prose cannot drift apart.
``ea_protocol/vectors.json``, the same vectors as data, must equal the
document's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest

from ea_protocol import signing
from ea_protocol.vectors import load_vectors as load_packaged_vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "ea-protocol.md"
REQUIRED_KEYS = {
    "secret",
    "method",
    "path",
    "query_string",
    "timestamp",
    "nonce",
    "body",
    "canonical",
    "signature",
}
UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def load_vectors() -> list[dict[str, Any]]:
    text = DOC.read_text(encoding="utf-8")
    _, _, section = text.partition("\n## Test vectors\n")
    blocks = re.findall(r"^```json\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, "the test vectors must be one ```json block under '## Test vectors'"
    vectors = json.loads(blocks[0])
    assert isinstance(vectors, list)
    return vectors


VECTORS = load_vectors()


def independent_encode(text: str) -> str:
    return "".join(chr(byte) if byte in UNRESERVED else f"%{byte:02X}" for byte in text.encode("utf-8"))


def independent_decode(text: str) -> str:
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", errors="replace")


def independent_canonical_path(path: str) -> str:
    decoded = unquote_to_bytes(path).decode("utf-8", errors="replace")
    return "".join(
        chr(byte) if byte in UNRESERVED or byte == ord("/") else f"%{byte:02X}"
        for byte in decoded.encode("utf-8")
    )


def independent_canonical_query(query_string: str) -> str:
    pairs = []
    for piece in query_string.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        pairs.append((independent_decode(key), independent_decode(value)))
    pairs.sort()
    return "&".join(f"{independent_encode(key)}={independent_encode(value)}" for key, value in pairs)


def independent_signature(vector: dict[str, Any]) -> tuple[str, str]:
    body = vector["body"].encode("utf-8")
    canonical = "\n".join(
        [
            vector["method"].upper(),
            independent_canonical_path(vector["path"]),
            independent_canonical_query(vector["query_string"]),
            vector["timestamp"],
            vector["nonce"],
            hashlib.sha256(body).hexdigest(),
        ]
    )
    digest = hmac.new(vector["secret"].encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256)
    return canonical, digest.hexdigest()


def test_the_packaged_vectors_are_the_documented_ones() -> None:
    assert load_packaged_vectors() == VECTORS


def test_there_are_at_least_six_vectors_with_every_field() -> None:
    assert len(VECTORS) >= 6
    for vector in VECTORS:
        assert vector.keys() >= REQUIRED_KEYS
        assert all(isinstance(vector[key], str) for key in REQUIRED_KEYS)


def test_the_vectors_cover_the_documented_cases() -> None:
    def canonical_query(vector: dict[str, Any]) -> str:
        return vector["canonical"].split("\n")[2]

    gets = [v for v in VECTORS if v["method"] == "GET"]
    posts = [v for v in VECTORS if v["method"] == "POST"]
    assert any(v["query_string"] == "" for v in gets), "a GET without a query"
    assert any(
        "%" in v["query_string"] and canonical_query(v) != v["query_string"] and "&" in v["query_string"]
        for v in gets
    ), "a GET whose query needs decoding, encoding and sorting"
    assert any(re.search(r"(^|&)[^=&]+=(&|$)", canonical_query(v)) for v in gets), "an empty query value"
    assert any(v["body"] and v["body"].isascii() for v in posts), "a POST with a JSON body"
    assert any(not v["body"].isascii() for v in posts), "a POST with non-ASCII UTF-8 in the body"
    assert any(not v["secret"].isascii() for v in VECTORS), "a secret with non-ASCII characters"
    assert any(
        "%" in v["path"] and v["canonical"].split("\n")[1] not in (v["path"], v["path"].upper())
        for v in VECTORS
    ), "a path that is decoded and encoded again"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.get("name", vector["nonce"]))
def test_vector_matches_ea_protocol_signing(vector: dict[str, Any]) -> None:
    canonical = signing.canonical_string(
        method=vector["method"],
        path=vector["path"],
        query_string=vector["query_string"],
        timestamp=vector["timestamp"],
        nonce=vector["nonce"],
        body=vector["body"].encode("utf-8"),
    )

    assert canonical == vector["canonical"]
    assert signing.sign(vector["secret"], canonical) == vector["signature"]
    assert signing.signature_matches(vector["secret"], vector["canonical"], vector["signature"])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.get("name", vector["nonce"]))
def test_vector_matches_an_independent_implementation(vector: dict[str, Any]) -> None:
    canonical, signature = independent_signature(vector)

    assert canonical == vector["canonical"]
    assert signature == vector["signature"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.get("name", vector["nonce"]))
def test_vector_headers_are_valid_on_the_wire(vector: dict[str, Any]) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,64}", vector["nonce"])
    assert re.fullmatch(r"[0-9]+", vector["timestamp"])
    assert re.fullmatch(r"[0-9a-f]{64}", vector["signature"])
    if vector["body"]:
        json.loads(vector["body"])
        assert vector["method"] == "POST"


def test_a_tampered_vector_no_longer_verifies() -> None:
    vector = VECTORS[0]
    tampered = vector["canonical"].replace(vector["timestamp"], str(int(vector["timestamp"]) + 1))

    assert not signing.signature_matches(vector["secret"], tampered, vector["signature"])


def test_the_worked_example_in_the_prose_is_one_of_the_vectors() -> None:
    prose, _, _ = DOC.read_text(encoding="utf-8").partition("\n## Test vectors\n")
    quoted_hashes = set(re.findall(r"\b[0-9a-f]{64}\b", prose))
    known = {vector["signature"] for vector in VECTORS} | {vector["canonical"][-64:] for vector in VECTORS}

    assert quoted_hashes, "section 3 shows a worked example"
    assert quoted_hashes <= known
