from __future__ import annotations

from django.apps import AppConfig


class EaGatewayConfig(AppConfig):
    name = "ea_gateway"
    verbose_name = "EA gateway"

    def ready(self) -> None:
        # Registers the HMAC scheme with drf-spectacular.
        from ea_gateway.api import schema  # noqa: F401
