"""Fernet-encrypted JSON, on top of django-fernet-fields-v2.

The library encrypts text under ``FERNET_KEYS`` (first key encrypts, all
decrypt, HKDF-derived as the library does) and raises ``InvalidToken`` when no
key fits: a wrong key is an error, never ciphertext or None handed on. Two
changes here: values are JSON (dicts of decimal strings), and the key set is
read from settings at use rather than frozen at first use, so a rotation is
seen without a restart of the test process that performs it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from fernet_fields import EncryptedTextField
from fernet_fields.hkdf import derive_fernet_key


@lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ValueError("FERNET_KEYS is empty")
    return MultiFernet([Fernet(derive_fernet_key(key)) for key in keys])


def current_fernet() -> MultiFernet:
    return _multi_fernet(tuple(settings.FERNET_KEYS))


def json_text(value: Any) -> str:
    """A JSON value as ``EncryptedJSONField`` writes it before encryption."""
    return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":"))


def json_encrypt(value: Any) -> bytes:
    """A JSON value as one ``EncryptedJSONField`` token (current first key), for a
    set-based write that does not build model instances."""
    return current_fernet().encrypt(json_text(value).encode())


class CurrentKeysMixin:
    @property
    def fernet(self) -> MultiFernet:
        return current_fernet()


class EncryptedText(CurrentKeysMixin, EncryptedTextField):
    """Text stored as one Fernet token (bytea). No lookups but isnull."""


class EncryptedJSONField(CurrentKeysMixin, EncryptedTextField):
    """A JSON object stored as one Fernet token (bytea). No lookups but isnull."""

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return json_text(value)

    def to_python(self, value: Any) -> Any:
        # Called with the decrypted text when a row is read.
        if isinstance(value, str):
            return json.loads(value, parse_float=Decimal)
        return value

    def value_to_string(self, obj) -> str:
        return json.dumps(self.value_from_object(obj), cls=DjangoJSONEncoder)
