"""The address a login comes from, as the lockout and the audit log key it.

Without a reverse proxy (``LOGIN_TRUSTED_PROXIES`` 0) it is the connection's own
(``REMOTE_ADDR``). Behind N proxies that each append the address they saw to
``X-Forwarded-For``, it is the N-th entry from the right: the one the outermost proxy
saw. Entries left of it are whatever the client sent and are never trusted. A header
with fewer entries, or a malformed one, falls back to the connection's address.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings


def client_ip_address(request) -> str | None:
    remote = request.META.get("REMOTE_ADDR")
    hops = settings.LOGIN_TRUSTED_PROXIES
    if not hops:
        return remote
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [entry for entry in forwarded if entry]
    if len(forwarded) < hops:
        return remote
    candidate = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote
