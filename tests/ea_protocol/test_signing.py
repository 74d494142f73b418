"""The canonical query and canonical string: the parts of signing that
implementations most often get wrong."""

from __future__ import annotations

import hashlib
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ea_protocol import signing


@pytest.mark.parametrize(
    ("query_string", "canonical"),
    [
        ("", ""),
        ("a=1", "a=1"),
        ("b=2&a=1", "a=1&b=2"),
        ("Z=1&a=2&_=3&0=4", "0=4&Z=1&_=3&a=2"),
    ],
)
def test_pairs_are_sorted_by_key(query_string: str, canonical: str) -> None:
    assert signing.canonical_query(query_string) == canonical


def test_repeated_keys_are_all_kept_and_sorted_by_value() -> None:
    assert signing.canonical_query("a=2&b=0&a=10&a=1") == "a=1&a=10&a=2&b=0"


def test_pairs_sort_on_decoded_text_not_on_the_encoding() -> None:
    # "é" is U+00E9, after "z"; its encoding "%C3%A9" would sort before it.
    assert signing.canonical_query("%C3%A9=1&z=2") == "z=2&%C3%A9=1"


@pytest.mark.parametrize(
    ("query_string", "canonical"),
    [
        ("note=a b", "note=a%20b"),
        ("note=a+b", "note=a%20b"),
        ("note=a%20b", "note=a%20b"),
        ("sym=XAU/USD", "sym=XAU%2FUSD"),
        ("sym=XAU%2fUSD", "sym=XAU%2FUSD"),
        ("keep=-_.~", "keep=-_.~"),
        ("x=%7E", "x=~"),
        ("q=a%2Bb", "q=a%2Bb"),
        ("k=€", "k=%E2%82%AC"),
        ("k=%E2%82%AC", "k=%E2%82%AC"),
        ("k%20y=1", "k%20y=1"),
        ("eq=a=b", "eq=a%3Db"),
        ("semi=a;b", "semi=a%3Bb"),
    ],
)
def test_keys_and_values_are_decoded_then_encoded_rfc3986(query_string: str, canonical: str) -> None:
    assert signing.canonical_query(query_string) == canonical


@pytest.mark.parametrize(
    ("query_string", "canonical"),
    [
        ("since=", "since="),
        ("flag", "flag="),
        ("limit=10&since=&flag", "flag=&limit=10&since="),
        ("=x", "=x"),
    ],
)
def test_blank_values_are_kept(query_string: str, canonical: str) -> None:
    assert signing.canonical_query(query_string) == canonical


def test_empty_pieces_are_dropped() -> None:
    assert signing.canonical_query("a=1&&b=2&") == "a=1&b=2"


def test_the_canonical_string_has_six_lines_in_order() -> None:
    body = b'{"a":1}'

    canonical = signing.canonical_string(
        method="post",
        path="/api/v1/client/ack",
        query_string="b=2&a=1",
        timestamp="1700",
        nonce="n" * 16,
        body=body,
    )

    assert canonical.split("\n") == [
        "POST",
        "/api/v1/client/ack",
        "a=1&b=2",
        "1700",
        "n" * 16,
        hashlib.sha256(body).hexdigest(),
    ]
    assert not canonical.endswith("\n")


def test_an_empty_body_hashes_to_the_sha256_of_nothing() -> None:
    canonical = signing.canonical_string(
        method="GET", path="/p", query_string="", timestamp="1", nonce="n" * 16, body=b""
    )

    assert canonical.endswith("\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_the_signature_depends_on_every_part() -> None:
    parts = {
        "method": "POST",
        "path": "/api/v1/client/ack",
        "query_string": "",
        "timestamp": "1763770000",
        "nonce": "abcdefghijklmnop",
        "body": b"{}",
    }
    reference = signing.sign("secret", signing.canonical_string(**parts))
    changes = {
        "method": "GET",
        "path": "/api/v1/client/poll",
        "query_string": "a=1",
        "timestamp": "1763770001",
        "nonce": "abcdefghijklmnoq",
        "body": b"{ }",
    }

    for name, value in changes.items():
        changed = signing.canonical_string(**{**parts, name: value})
        assert signing.sign("secret", changed) != reference, name
    assert signing.sign("secret2", signing.canonical_string(**parts)) != reference


def test_signature_matches_rejects_garbage_without_raising() -> None:
    canonical = "GET\n/\n\n1\nnonce\nhash"
    good = signing.sign("s", canonical)

    assert signing.signature_matches("s", canonical, good)
    assert not signing.signature_matches("s", canonical, good.upper())
    assert not signing.signature_matches("s", canonical, "ünïcode")
    assert not signing.signature_matches("s", canonical, "")


_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=8)


@given(st.lists(st.tuples(_text, _text), max_size=6))
def test_any_encoding_of_the_same_pairs_canonicalizes_the_same(pairs: list[tuple[str, str]]) -> None:
    # A client may encode spaces as "+" or "%20" and order pairs as it likes.
    plus_encoded = urlencode(pairs)
    percent_encoded = urlencode(list(reversed(pairs)), quote_via=quote)

    canonical = signing.canonical_query(plus_encoded)

    assert canonical == signing.canonical_query(percent_encoded)
    expected = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(pairs))
    assert canonical == expected


# --- PATH: the path as requested, decoded, encoded again with "/" kept ----------------


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/api/v1/client/poll", "/api/v1/client/poll"),
        ("/api/v1/client/%70oll", "/api/v1/client/poll"),  # an unreserved character encoded
        ("/veil%20stop/api/v1/client/poll", "/veil%20stop/api/v1/client/poll"),
        ("/veil stop/api/v1/client/poll", "/veil%20stop/api/v1/client/poll"),
        ("/caf%c3%a9/x", "/caf%C3%A9/x"),  # lower-case hex
        ("/café/x", "/caf%C3%A9/x"),
        ("/a+b/x", "/a%2Bb/x"),  # "+" is not a space in a path
        ("/100%25/x", "/100%25/x"),  # a literal "%" is sent, and signed, as %25
        ("/a%2Fb/", "/a/b/"),  # an encoded "/" is a "/" (WSGI cannot tell them apart)
        ("/api/v1/client/poll/", "/api/v1/client/poll/"),  # nothing added or removed
    ],
)
def test_the_path_is_decoded_then_encoded_with_slashes_kept(path: str, canonical: str) -> None:
    assert signing.canonical_path(path) == canonical
    assert (
        signing.canonical_string(
            method="GET", path=path, query_string="", timestamp="1", nonce="n", body=b""
        ).split("\n")[1]
        == canonical
    )


def _encodings(text: str, draw) -> str:
    """Some way a client may write ``text`` in a URL path: each character kept as it is
    (when that is unambiguous) or percent-encoded, with either case of hex digits."""
    written = []
    for character in text:
        must_encode = character in "%?#" or not character.isprintable()
        if must_encode or draw(st.booleans()):
            encoded = "".join(f"%{byte:02X}" for byte in character.encode("utf-8"))
            written.append(encoded.lower() if draw(st.booleans()) else encoded)
        else:
            written.append(character)
    return "".join(written)


path_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=20).map(
    lambda text: "/" + text
)


@given(decoded=path_text, data=st.data())
def test_every_way_of_writing_a_path_signs_as_the_server_sees_it(decoded: str, data) -> None:
    # given: the path a WSGI server hands to Django (decoded), and one way an EA wrote it
    written = _encodings(decoded, data.draw)

    # then: the EA's PATH line (from what it wrote) is the server's (from what it got)
    assert signing.canonical_path(written) == signing.encode_path(decoded)
    assert signing.canonical_path(signing.encode_path(decoded)) == signing.encode_path(decoded)
