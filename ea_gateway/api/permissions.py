from __future__ import annotations

from rest_framework.permissions import BasePermission

from ea_gateway.choices import DeviceRole
from ea_gateway.models import Device


class _DeviceRole(BasePermission):
    role: str

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Device) and request.auth.role == self.role


class IsEADevice(_DeviceRole):
    role = DeviceRole.EA


class IsFeedDevice(_DeviceRole):
    role = DeviceRole.FEED
