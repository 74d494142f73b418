"""Hidden levels are stored only as Fernet tokens, and key rotation keeps them readable."""

from __future__ import annotations

import re

import pytest
from cryptography.fernet import InvalidToken
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from signals_app.events import Actor
from signals_app.fields import _multi_fernet, current_fernet
from signals_app.models import AuditEvent, Signal
from signals_app.services import signal_update_hidden_levels
from tests.factories import make_signal

pytestmark = pytest.mark.django_db


def current_fernet_for(keys: list[str]):
    return _multi_fernet(tuple(keys))


OLD_KEY = "an-old-fernet-key-for-the-rotation-test-0001"
NEW_KEY = "a-new-fernet-key-for-the-rotation-test-00002"


def _raw(table: str, column: str) -> list[bytes]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY id")  # noqa: S608
        return [bytes(row[0]) for row in cursor.fetchall()]


def test_raw_sql_shows_only_fernet_tokens():
    make_signal(sl="2645.37", tp="2670.91", strategy="secret-strategy-name")

    (token,) = _raw("signals_app_signal", "owner_only")

    assert token.startswith(b"gAAAAA")  # Fernet version byte 0x80, base64url
    # nothing but the token's base64url: no JSON, no digits-and-dots of a price in the clear
    assert re.fullmatch(rb"[A-Za-z0-9_\-]+=*", token)
    assert b"secret-strategy-name" not in token
    # and it is the levels, encrypted: the current key opens it
    assert b"2645.37" in current_fernet().decrypt(token)


def test_a_wrong_key_raises_instead_of_returning_ciphertext():
    signal = make_signal()
    with (
        override_settings(FERNET_KEYS=["some-other-key-that-never-encrypted-anything"]),
        pytest.raises(InvalidToken),
    ):
        Signal.objects.get(pk=signal.pk)


def test_rotation_add_key_reencrypt_remove_old_key():
    # given: rows written under the old key, including an audit record of a level change
    with override_settings(FERNET_KEYS=[OLD_KEY]):
        signal = make_signal(sl="2645.11", tp="2670.22")
        signal_update_hidden_levels(
            signal=signal, owner_only={"sl": "2646.00", "tp": "2670.22"}, by=Actor.system("t")
        )
        old_tokens = _raw("signals_app_signal", "owner_only") + _raw("signals_app_auditevent", "secret_data")

    # when: the new key goes first, everything is re-encrypted, and the old key is dropped
    with override_settings(FERNET_KEYS=[NEW_KEY, OLD_KEY]):
        call_command("reencrypt")
    new_tokens = _raw("signals_app_signal", "owner_only") + _raw("signals_app_auditevent", "secret_data")

    # then: every row is now under the new key, and decrypts with it alone
    new_only = current_fernet_for([NEW_KEY])
    assert all(new_only.decrypt(token) for token in new_tokens)
    with pytest.raises(InvalidToken):
        new_only.decrypt(old_tokens[0])
    with override_settings(FERNET_KEYS=[NEW_KEY]):
        assert Signal.objects.get(pk=signal.pk).owner_only == {"sl": "2646.00", "tp": "2670.22"}
        event = AuditEvent.objects.get(action="signal.levels_changed")
        assert event.secret_data == {
            "old": {"sl": "2645.11", "tp": "2670.22"},
            "new": {"sl": "2646.00", "tp": "2670.22"},
        }
    with override_settings(FERNET_KEYS=[OLD_KEY]), pytest.raises(InvalidToken):
        Signal.objects.get(pk=signal.pk)
