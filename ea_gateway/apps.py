from __future__ import annotations

from django.apps import AppConfig


class EaGatewayConfig(AppConfig):
    name = "ea_gateway"
    verbose_name = "EA gateway"

    def ready(self) -> None:
        # Registers the HMAC scheme with drf-spectacular, and the app's system checks.
        from ea_gateway import checks  # noqa: F401
        from ea_gateway.api import schema  # noqa: F401
