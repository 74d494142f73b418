from __future__ import annotations

from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """An input allow-list: a field it does not declare is an error, not ignored.

    A client that sends ``stop_loss`` or ``device_id`` learns at once that the
    server does not take it, and nothing it sent beyond the list is ever applied.
    """

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key)[:50] for key in set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: ["This field is not allowed."] for key in unknown[:20]}
                )
        return super().to_internal_value(data)
