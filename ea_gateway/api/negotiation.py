"""Content negotiation for the device API: DRF's, with a shortcut for what EAs send.

Every EA and feed asks for JSON (``Accept: application/json``, ``*/*`` or no header)
and the device API renders nothing else. DRF would parse the header into media types
and rank them on every request, only to pick the one JSON renderer and the media type
it names: here those requests get that answer directly. Any other header, a
``?format=`` override or a format suffix goes through DRF's negotiation as before
(406 for what cannot be rendered).
"""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation

JSON = "application/json"
_PLAIN_ACCEPT = frozenset({"", "*/*", JSON})


class DeviceContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        meta = request.META
        if (
            format_suffix is None
            and len(renderers) == 1
            and renderers[0].media_type == JSON
            and meta.get("HTTP_ACCEPT", "") in _PLAIN_ACCEPT
            and "format" not in meta.get("QUERY_STRING", "")
        ):
            return renderers[0], JSON
        return super().select_renderer(request, renderers, format_suffix)
