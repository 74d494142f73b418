from __future__ import annotations

from django.apps import AppConfig


class EaGatewayConfig(AppConfig):
    name = "ea_gateway"
    verbose_name = "EA gateway"
