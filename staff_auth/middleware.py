"""Session expiry and the second factor's gate, for browser paths (after authentication).

1. A logged-in session idle for ``SESSION_IDLE_TIMEOUT_SECONDS``, or older than
   ``SESSION_COOKIE_AGE`` since its login, ends here: an audit event says which, the
   session is flushed and the request goes on anonymous (the admin then asks for a login).
   Flushing, not ``logout()``: a form posted after the expiry reaches the login page
   instead of failing CSRF on a rotated token.
2. With ``STAFF_TWO_FACTOR`` on, a session that passed the password step but not the code
   step (``request.user.is_verified()`` false, django-otp) is not a login yet. Under the
   admin it is sent to the code page (or to enrolment when the user has no authenticator);
   the code pages and logout take it as it is. Anywhere else (the owner API's session
   authentication, the API docs) it counts as anonymous. The admin site itself also refuses
   such a session (``staff_auth.admin_site``), so no admin view depends on this redirect.

The signed device API never gets here (``ea_gateway.middleware.is_device_api``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponseRedirect
from django.urls import reverse

from ea_gateway.middleware import is_device_api
from signals_app.choices import AuditAction
from staff_auth.events import auth_audit
from staff_auth.session_clock import session_expiry_reason
from staff_auth.two_factor import is_verified


class StaffSessionMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if is_device_api(request) or not request.user.is_authenticated:
            return self.get_response(request)
        reason = session_expiry_reason(request.session)
        if reason is not None:
            auth_audit(
                action=AuditAction.AUTH_SESSION_EXPIRED,
                request=request,
                user=request.user,
                data={"reason": reason},
            )
            request.session.flush()
            request.user = AnonymousUser()
            return self.get_response(request)
        if settings.STAFF_TWO_FACTOR and not is_verified(request.user):
            return self._second_step(request)
        return self.get_response(request)

    def _second_step(self, request):
        if not (request.user.is_active and request.user.is_staff):  # no console user: not a login here
            request.user = AnonymousUser()
            return self.get_response(request)
        path = request.path_info
        verify, enroll = reverse("two-factor-verify"), reverse("two-factor-enroll")
        if path in {verify, enroll, reverse("admin:logout")}:
            return self.get_response(request)
        if path.startswith(reverse("admin:index")):
            next_url = request.get_full_path()
            if path == reverse("admin:login"):
                next_url = request.GET.get("next") or reverse("admin:index")
            return HttpResponseRedirect(f"{verify}?{urlencode({'next': next_url})}")
        request.user = AnonymousUser()
        return self.get_response(request)
