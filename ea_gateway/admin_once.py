"""Post/redirect/get for the console's secret-issuing actions (create a device, rotate
its secret).

- **One-time forms.** Each form carries a random token (``once``); the action claims it
  in Redis (SET NX) inside the action's transaction, naming the device it acted on. The
  same form sent again (a reload of the POST, back and resubmit, a double click) finds
  the claim and acts no more: one device, one rotation.
- **The secret shown once, after a redirect.** The action keeps the new secret in
  Redis for ``SECRET_SHOWN_SECONDS``, Fernet-encrypted with the project's keys, under a
  random token and the acting user's id, and redirects (303) to a page that takes it
  (GETDEL): reloading that page shows it no more. Never in a URL, a cookie, a message
  or a log.
"""

from __future__ import annotations

import json
import re
import secrets

from cryptography.fernet import InvalidToken

from core.redis import get_redis
from ea_gateway.services import IssuedCredentials
from signals_app.fields import current_fernet

SECRET_SHOWN_SECONDS = 600
ONCE_SECONDS = 86_400
_KEPT_KEY = "veilstop:admin:device-secret:{user}:{token}"
_ONCE_KEY = "veilstop:admin:once:{token}"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,64}")


class AlreadySubmitted(Exception):
    """The form's token was claimed by an earlier submission, for ``device_id``."""

    def __init__(self, device_id: int) -> None:
        super().__init__(device_id)
        self.device_id = device_id


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_token(value: str) -> bool:
    return bool(_TOKEN.fullmatch(value or ""))


def once_done(token: str) -> int | None:
    """The device an earlier submission of this form acted on, or None."""
    done = get_redis().get(_ONCE_KEY.format(token=token))
    return int(done) if done is not None else None


def once_release(token: str) -> None:
    """Forget a claim whose action did not commit (its device does not exist)."""
    get_redis().delete(_ONCE_KEY.format(token=token))


def once_claim(token: str, *, device_id: int) -> None:
    """Claim the form's token for the action on ``device_id``; raise AlreadySubmitted if an
    earlier submission holds it. Call inside the action's transaction: a raise rolls it back."""
    key = _ONCE_KEY.format(token=token)
    if not get_redis().set(key, device_id, nx=True, ex=ONCE_SECONDS):
        raise AlreadySubmitted(once_done(token) or device_id)


def secret_hold(*, user_id: int, credentials: IssuedCredentials, created: bool) -> str:
    """Keep the new secret for the user's next page; return the token that names it."""
    token = new_token()
    payload = {"device": credentials.device.pk, "secret": credentials.secret, "created": created}
    sealed = current_fernet().encrypt(json.dumps(payload).encode())
    get_redis().set(_KEPT_KEY.format(user=user_id, token=token), sealed, ex=SECRET_SHOWN_SECONDS)
    return token


def secret_take(*, user_id: int, token: str, device_id: int) -> tuple[str, bool] | None:
    """The secret kept for this user under ``token`` for ``device_id``, and whether the
    device was just created; None once taken, expired, or not this user's."""
    if not is_token(token):
        return None
    sealed = get_redis().getdel(_KEPT_KEY.format(user=user_id, token=token))
    if sealed is None:
        return None
    try:
        payload = json.loads(current_fernet().decrypt(sealed))
    except InvalidToken:  # sealed under a key since retired: as good as expired
        return None
    if payload["device"] != device_id:
        return None
    return payload["secret"], bool(payload["created"])
