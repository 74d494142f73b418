from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from rest_framework import serializers
from rest_framework.settings import api_settings


class StrictInputSerializer(serializers.Serializer):
    """An input allow-list: a field it does not declare is an error, not ignored.

    A client that sends ``stop_loss`` or ``device_id`` learns at once that the
    server does not take it, and nothing it sent beyond the list is ever applied.
    """

    # Two rules across fields, declared rather than written in ``validate`` so that core.schema
    # states them in the OpenAPI schema from the same declaration. required_when: optional
    # fields a value of a choice field requires ({"status": {"placed": ("entry_price", ...)}}:
    # a fill needs its price). one_group_of: groups of fields of which a request sends exactly
    # one, complete (one price, or a bid and an ask).
    required_when: ClassVar[dict[str, dict[str, tuple[str, ...]]]] = {}
    one_group_of: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key)[:50] for key in set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: ["This field is not allowed."] for key in unknown[:20]}
                )
        validated = super().to_internal_value(data)
        self._check_required_when(validated)
        self._check_one_group_of(validated)
        return validated

    def _check_required_when(self, validated: dict) -> None:
        for name, requirements in self.required_when.items():
            value = validated.get(name)
            missing = [field for field in requirements.get(value, ()) if field not in validated]
            if missing:
                raise serializers.ValidationError(
                    {field: [f"Required when {name} is {value}."] for field in missing}
                )

    def _check_one_group_of(self, validated: dict) -> None:
        if not self.one_group_of:
            return
        sent = [group for group in self.one_group_of if any(name in validated for name in group)]
        complete = [group for group in sent if all(name in validated for name in group)]
        if len(sent) != 1 or len(complete) != 1:
            choices = " or ".join(" and ".join(group) for group in self.one_group_of)
            # Raised from to_internal_value: DRF wraps only validate()'s plain messages.
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [f"Send exactly one of: {choices}."]}
            )


class PlainDecimalField(serializers.DecimalField):
    """A decimal kept with the precision it was sent with (2644.80 stays 2644.80, where
    DRF's DecimalField would pad it to ``decimal_places``), of at most ``places`` decimal
    places."""

    def __init__(self, *, places: int, **kwargs) -> None:
        self.places = places
        super().__init__(decimal_places=None, **kwargs)
        self.validators.append(self._at_most_places)

    def _at_most_places(self, value: Decimal) -> None:
        if value.as_tuple().exponent < -self.places:  # type: ignore[operator]
            raise serializers.ValidationError(f"at most {self.places} decimal places")
