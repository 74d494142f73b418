"""The browser's middleware, skipped for the signed device API.

EAs and price feeds (``ea_gateway.api.urls``) authenticate every request by its
HMAC signature (``ea_gateway.api.authentication``): they send no cookie, have no
session, are never shown a message, and their views are CSRF-exempt (DRF's
``APIView``). Django's session, CSRF, authentication and messages middleware
would only cost them time on the busiest paths of the server (issue 11: an idle
EA's poll is mostly fixed cost). Each class here is Django's own, run for every
other path (the admin, the owner and bot APIs, /healthz) exactly as before.

Only the exact paths of the device API's URL patterns are skipped, as the
URL map reverses them: a new EA endpoint is covered by being in that URL module,
and no other path is (a prefix would also catch a path the device API does not
own). The middleware that protects every response (security headers, the host
check, frame options) and the request metrics run for these paths too.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import NoReverseMatch, get_script_prefix, reverse

from ea_gateway.api import urls as device_api_urls

_paths_by_map: dict[str, frozenset[str]] = {}


def device_api_paths() -> frozenset[str]:
    """The device API's paths (as ``request.path_info``: without the script prefix) under
    the URL map in force. Read on every request by each class below: a settings
    attribute and two lookups, nothing that costs what the skipped middleware does."""
    urlconf = settings.ROOT_URLCONF
    paths = _paths_by_map.get(urlconf)
    if paths is None:
        found = set()
        for pattern in device_api_urls.urlpatterns:
            try:
                found.add("/" + reverse(pattern.name, urlconf=urlconf).removeprefix(get_script_prefix()))
            except NoReverseMatch:  # a URL map that does not mount the device API
                continue
        paths = _paths_by_map[urlconf] = frozenset(found)
    return paths


def is_device_api(request) -> bool:
    return request.path_info in device_api_paths()


class _BrowserOnly:
    def __call__(self, request):
        if is_device_api(request):
            return self.get_response(request)
        return super().__call__(request)


class BrowserSessionMiddleware(_BrowserOnly, SessionMiddleware):
    pass


class BrowserCsrfViewMiddleware(_BrowserOnly, CsrfViewMiddleware):
    def process_view(self, request, callback, callback_args, callback_kwargs):
        if is_device_api(request):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class BrowserAuthenticationMiddleware(_BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_BrowserOnly, MessageMiddleware):
    pass
