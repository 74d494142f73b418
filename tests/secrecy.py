"""Finding a hidden level in text, whatever its formatting."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from decimal import Decimal


def level_pattern(price: Decimal) -> re.Pattern[str]:
    """Matches ``price`` as a whole number token: 2645.5 also as 2645.50, 2645.500; 2645 as 2645.0."""
    normalized = format(price.normalize(), "f")
    whole, _, fraction = normalized.partition(".")
    tail = rf"\.{fraction}0*" if fraction else r"(?:\.0+)?"
    return re.compile(rf"(?<![\d.]){re.escape(whole)}{tail}(?![\d])")


def find_levels(text: str, prices: Iterable[Decimal]) -> list[str]:
    return [format(price, "f") for price in prices if level_pattern(price).search(text)]


class RecordingHandler(logging.Handler):
    """Keeps every formatted record at INFO or above, from every logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''} {record.args!r}")


# --- stored text: PostgreSQL and Redis ------------------------------------------------

# A Fernet token (what EncryptedJSONField and EncryptedText store): ciphertext, left out of
# the scans; what is encrypted is exactly what may hold a level.
FERNET_TOKEN = re.compile(r"gAAAAA[A-Za-z0-9_\-]+=*")
# A bytea value as row_to_json renders it ("\\x6741..."): decoded, so a plaintext value in a
# binary column is read as text, and a Fernet token in one is recognised as ciphertext.
_BYTEA_HEX = re.compile(r"\\\\x((?:[0-9a-f]{2})*)")


def readable(text: str) -> str:
    """``text`` with bytea decoded and Fernet tokens blanked out."""
    decoded = _BYTEA_HEX.sub(lambda match: bytes.fromhex(match[1]).decode("latin-1"), text)
    return FERNET_TOKEN.sub("<fernet>", decoded)


def database_text(tables: Iterable[str] | None = None) -> str:
    """Every row of ``tables`` (default: every table in the database) as JSON text, one
    line per row, prefixed with its table."""
    from django.db import connection

    with connection.cursor() as cursor:
        names = sorted(tables) if tables is not None else sorted(connection.introspection.table_names(cursor))
        lines = []
        for table in names:
            # A table name from the database's own catalogue, quoted: no input reaches this.
            cursor.execute(f"SELECT row_to_json(t)::text FROM {connection.ops.quote_name(table)} t")  # noqa: S608
            lines.extend(f"{table} {row[0]}" for row in cursor.fetchall())
    return readable("\n".join(lines))


def redis_text(client) -> str:
    """Every key of ``client``'s database with its whole value, one line per key."""

    def text(value: object) -> str:
        return value.decode("latin-1") if isinstance(value, bytes) else str(value)

    lines = []
    for key in client.scan_iter(count=1000):
        kind = text(client.type(key))
        if kind == "string":
            values: list = [client.get(key)]
        elif kind == "hash":
            values = [part for pair in client.hgetall(key).items() for part in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = sorted(client.smembers(key))
        elif kind == "zset":
            values = [part for pair in client.zrange(key, 0, -1, withscores=True) for part in pair]
        elif kind == "stream":
            values = client.xrange(key)
        elif kind == "none":  # expired between SCAN and TYPE
            continue
        else:
            raise AssertionError(f"Redis key {text(key)!r} has a type this scan cannot read: {kind}")
        lines.append(f"{text(key)} {' '.join(text(value) for value in values)}")
    return readable("\n".join(lines))


def response_text(response) -> str:
    """Everything an HTTP answer carries: its body and every header."""
    return response.content.decode() + " " + " ".join(f"{k}: {v}" for k, v in response.items())
