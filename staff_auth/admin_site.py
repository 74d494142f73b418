"""The admin site asks for a verified session while ``STAFF_TWO_FACTOR`` is on.

``AdminSite.has_permission`` is what ``admin_view`` checks for every admin page, the
custom ``get_urls()`` views, the monitor dashboard, the guards page and the exports
among them: a session without its code step is sent to the login, as an anonymous one
is. Off, the site is exactly Django's.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.admin import AdminSite

from staff_auth.two_factor import is_verified


def require_two_factor(site: AdminSite) -> None:
    password_only = site.has_permission

    def has_permission(request) -> bool:
        if not password_only(request):
            return False
        return not settings.STAFF_TWO_FACTOR or is_verified(request.user)

    site.has_permission = has_permission
