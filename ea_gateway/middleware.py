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
own). A pattern that has no such path (a converter in it, no name, an include())
would get the whole browser stack: the system check ``ea_gateway.E001``
(``ea_gateway.checks``) names it at ``manage.py check``, ``migrate`` and
``runserver``. django-otp's and django-axes' middleware (the staff's second factor and
login lockout, ``staff_auth``) are browser-only likewise. The middleware that protects
every response (security headers, the host check, frame options) and the request metrics
run for these paths too.
"""

from __future__ import annotations

from dataclasses import dataclass

from axes.middleware import AxesMiddleware
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import (
    NoReverseMatch,
    Resolver404,
    URLPattern,
    URLResolver,
    get_resolver,
    get_script_prefix,
    resolve,
    reverse,
)
from django_otp.middleware import OTPMiddleware

from ea_gateway.api import urls as device_api_urls

_paths_by_map: dict[str, frozenset[str]] = {}


@dataclass(frozen=True)
class DeviceApiRoutes:
    paths: frozenset[str]  # as ``request.path_info``: without the script prefix
    problems: tuple[str, ...]  # device-API patterns none of the paths stands for, and why


def device_api_routes(urlconf: str) -> DeviceApiRoutes:
    """The device API's paths under the URL map ``urlconf``, and each of its patterns that
    this middleware cannot skip by exact path: the browser middleware would run for it.
    The system check ``ea_gateway.checks`` reports those; a URL map that does not mount
    the device API has none."""
    mounts = _mounts(get_resolver(urlconf).url_patterns)
    paths: set[str] = set()
    problems: list[str] = []
    if mounts > 1:
        problems.append(f"the device API is mounted {mounts} times; only one path per pattern is skipped")
    for pattern in device_api_urls.urlpatterns:
        if not isinstance(pattern, URLPattern):
            problems.append(f"{pattern!r} is an include(), not a path of its own")
            continue
        described = pattern.pattern.describe()
        try:
            path = "/" + reverse(pattern.name, urlconf=urlconf).removeprefix(get_script_prefix())
        except NoReverseMatch:
            if pattern.name is None:
                problems.append(f"{described} has no name")
            elif mounts:
                problems.append(f"{described} does not reverse without arguments (a converter, a namespace)")
            continue
        try:
            resolved = resolve(path, urlconf).func is pattern.callback
        except Resolver404:
            resolved = False
        if not resolved:
            problems.append(f"{described} reverses to {path}, which another view answers")
            continue
        paths.add(path)
    return DeviceApiRoutes(frozenset(paths), tuple(problems))


def _mounts(patterns) -> int:
    found = 0
    for entry in patterns:
        if isinstance(entry, URLResolver):
            module = entry.urlconf_module
            if module is device_api_urls or module is device_api_urls.urlpatterns:
                found += 1
            else:
                found += _mounts(entry.url_patterns)
    return found


def device_api_paths() -> frozenset[str]:
    """The device API's paths under the URL map in force. Read on every request by each
    class below: a settings attribute and two lookups, nothing that costs what the
    skipped middleware does."""
    urlconf = settings.ROOT_URLCONF
    paths = _paths_by_map.get(urlconf)
    if paths is None:
        paths = _paths_by_map[urlconf] = device_api_routes(urlconf).paths
    return paths


def is_device_api(request) -> bool:
    """Asked by each browser-only middleware of every request: answered once per request."""
    try:
        return request.is_device_api
    except AttributeError:
        request.is_device_api = answer = request.path_info in device_api_paths()
        return answer


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


class BrowserOTPMiddleware(_BrowserOnly, OTPMiddleware):
    pass


class BrowserAxesMiddleware(_BrowserOnly, AxesMiddleware):
    pass
