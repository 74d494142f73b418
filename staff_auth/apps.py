from __future__ import annotations

from django.apps import AppConfig


class StaffAuthConfig(AppConfig):
    name = "staff_auth"
    verbose_name = "Staff login"

    def ready(self) -> None:
        # The login, logout and lockout signals of django.contrib.auth and django-axes: the
        # only places those events are seen (the views are Django's and axes').
        from staff_auth import receivers  # noqa: F401
