from __future__ import annotations

from django.apps import AppConfig


class StaffAuthConfig(AppConfig):
    name = "staff_auth"
    verbose_name = "Staff login"

    def ready(self) -> None:
        # The login, logout and lockout signals of django.contrib.auth and django-axes: the
        # only places those events are seen (the views are Django's and axes').
        from staff_auth import receivers  # noqa: F401

        _unregister_secrets_admins()


def _unregister_secrets_admins() -> None:
    """The console shows no second-factor key and no API token: django-otp's TOTP device
    admin would show every staff user's key and QR code, and add, change or remove an
    authenticator past ``reset_two_factor`` and its audit; DRF's token admin lists token
    keys, each a login to the owner API. Enrolment and ``manage.py reset_two_factor``
    manage authenticators, ``manage.py drf_create_token`` tokens. (Run after the admin's
    autodiscovery, which django.contrib.admin's ready() does: it is listed before.)"""
    from django.contrib import admin
    from django_otp.plugins.otp_totp.models import TOTPDevice
    from rest_framework.authtoken.models import TokenProxy

    for model in (TOTPDevice, TokenProxy):
        if admin.site.is_registered(model):
            admin.site.unregister(model)
