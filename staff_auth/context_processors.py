"""The console's frame (django-unfold's colours, console.css) for the one page rendered
outside the admin's views: axes' lockout page (AXES_LOCKOUT_TEMPLATE), which axes renders
with the request's context only. Every other request gets nothing from here."""

from __future__ import annotations

from django.contrib import admin


def lockout_frame(request) -> dict:
    if getattr(request, "axes_locked_out", False):
        return admin.site.each_context(request)
    return {}
