"""The OpenAPI schema says what the server takes, read from the same serializers that validate.

drf-spectacular maps a serializer to a schema looser than DRF validates it: a decimal is any
string, a blank text passes ``minLength``, a field nobody declared is allowed, a list that may
not be empty has no ``minItems``. A client generated from such a schema sends what the server
refuses. ``StrictAutoSchema`` (``DEFAULT_SCHEMA_CLASS``) tightens request schemas from the
serializers' own attributes, so the schema and the validation cannot drift:

1. a ``StrictInputSerializer`` is ``additionalProperties: false`` (it refuses unknown keys),
   with its ``required_when`` as a ``oneOf`` per value and its ``one_group_of`` as a ``oneOf``
   per group;
2. a text that is trimmed and may not be blank has a pattern with a non-space character; every
   text refuses U+0000 (core.parsers refuses it anywhere in a body);
3. a decimal is a string in plain notation whose pattern holds its bounds and decimal places
   (``decimal_pattern``): JSON Schema has no minimum or maximum for a string;
4. a list of nested inputs has ``minItems``/``maxItems`` from ``allow_empty``/``max_length``.

Rules JSON Schema cannot state (one field compared with another, with the clock or with stored
rows) are in the fields' descriptions.
"""

from __future__ import annotations

import re
from decimal import Decimal

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from rest_framework import serializers

from core.serializers import StrictInputSerializer

NO_NUL = "^[^\\u0000]*$"
NOT_BLANK = "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"  # what is left after trimming is not empty


def _whole_numbers(low: int, high: int) -> list[str]:
    """Alternatives matching the whole numbers from ``low`` (0 or 1) to ``high`` in plain
    notation, without leading zeros."""
    assert low in (0, 1)
    assert high >= low
    text = str(high)
    if set(text) == {"9"}:  # every number of up to len(text) digits
        options = ["0"] if low == 0 else []
        return [*options, "[1-9]" + (f"[0-9]{{0,{len(text) - 1}}}" if len(text) > 1 else "")]
    options = ["0"] if low == 0 else []
    if len(text) > 1:
        options.append("[1-9]" + (f"[0-9]{{0,{len(text) - 2}}}" if len(text) > 2 else ""))
    for index, digit in enumerate(map(int, text)):
        lowest = 1 if index == 0 else 0
        if digit > lowest:
            rest = len(text) - index - 1
            options.append(text[:index] + f"[{lowest}-{digit - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    options.append(text)
    return options


def decimal_body(
    *,
    places: int | None,
    min_value: Decimal | None,
    max_value: Decimal | None,
    max_digits: int | None = None,
) -> str:
    """An unanchored regular expression (ECMA and Python alike) for the decimals, in plain
    notation, that a DRF DecimalField with these bounds takes. Raises ValueError for bounds it
    cannot state exactly, so a new field's rule is never documented loosely."""
    fraction = "" if places == 0 else (r"(?:\.[0-9]+)?" if places is None else rf"(?:\.[0-9]{{1,{places}}})?")
    # The whole part is below `below` (any fraction), or is `boundary` with a zero fraction.
    digits_limit = None
    if max_digits is not None:
        if places is None:
            raise ValueError("no pattern for max_digits without decimal places")
        digits_limit = 10 ** (max_digits - places)
    boundary = None
    if max_value is not None:
        if max_value != max_value.to_integral_value():
            raise ValueError(f"no pattern for a fractional maximum {max_value}")
        boundary = int(max_value)
        if digits_limit is not None and boundary >= digits_limit:
            boundary = None  # max_digits is the tighter bound
    if boundary is None and digits_limit is None:
        raise ValueError("no pattern for a decimal without an upper bound")
    below = boundary if boundary is not None else digits_limit
    if min_value is None or min_value < 0:
        if min_value is not None and (max_value is None or min_value != -max_value):
            raise ValueError(f"no pattern for an asymmetric range {min_value}..{max_value}")
        sign, lowest = "-?", 0
    elif min_value == 0:
        sign, lowest = "", 0
    elif places is not None and min_value == Decimal(1).scaleb(-places):
        sign, lowest = "", 1  # positive: the smallest step is the minimum
    else:
        raise ValueError(f"no pattern for a minimum of {min_value} with {places} decimal places")
    options = []
    if below - 1 >= lowest:
        options.append(f"(?:{'|'.join(_whole_numbers(lowest, below - 1))}){fraction}")
    if lowest == 1:  # 0.x with a non-zero digit among at most `places`
        if places is None:
            options.append(r"0\.0*[1-9][0-9]*")
        elif places:
            nonzero = [f"0{{{zeros}}}[1-9]" if zeros else "[1-9]" for zeros in range(places)]
            options.append(
                r"0\.(?:"
                + "|".join(
                    option + (f"[0-9]{{0,{places - 1 - zeros}}}" if places - 1 - zeros else "")
                    for zeros, option in enumerate(nonzero)
                )
                + ")"
            )
    if boundary is not None:
        zeros = "" if places == 0 else (r"(?:\.0+)?" if places is None else rf"(?:\.0{{1,{places}}})?")
        options.append(str(boundary) + zeros)
    return f"{sign}(?:{'|'.join(options)})"


def decimal_pattern(**bounds) -> str:
    return f"^{decimal_body(**bounds)}$"


def field_decimal_pattern(field: serializers.DecimalField) -> str:
    return decimal_pattern(
        places=getattr(field, "places", field.decimal_places),
        min_value=field.min_value,
        max_value=field.max_value,
        max_digits=field.max_digits if field.decimal_places is not None else None,
    )


class StrictAutoSchema(AutoSchema):
    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request" or not isinstance(schema, dict) or "$ref" in schema:
            return schema
        if isinstance(field, serializers.DecimalField) and schema.get("type") == "string":
            schema["pattern"] = field_decimal_pattern(field)
            schema["maxLength"] = field.MAX_STRING_LENGTH  # DRF refuses longer strings unread
            if getattr(field, "places", field.decimal_places) is None and field.max_digits is None:
                # Any precision: a JSON number is taken exactly as well (terminals send floats).
                number = {"type": "number", "minimum": field.min_value, "maximum": field.max_value}
                schema = {"oneOf": [schema, number]}
        elif isinstance(field, serializers.CharField) and schema.get("type") == "string":
            if "pattern" not in schema and not _has_regex(field):
                blank_refused = not field.allow_blank and field.trim_whitespace
                schema["pattern"] = NOT_BLANK if blank_refused else NO_NUL
        elif isinstance(field, serializers.ListSerializer):
            if not field.allow_empty:
                schema["minItems"] = max(schema.get("minItems", 0), 1)
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _get_request_for_media_type(self, serializer, direction="request"):
        schema, required = super()._get_request_for_media_type(serializer, direction)
        # drf-spectacular makes a body optional when no single field is required; one group of
        # fields is, and an absent body sends none of them.
        if isinstance(force_instance(serializer), StrictInputSerializer) and serializer.one_group_of:
            required = True
        return schema, required

    def _insert_field_validators(self, field, schema):
        super()._insert_field_validators(field, schema)
        # drf-spectacular offers a blank text as a second branch of a oneOf when a text field has a
        # pattern; NO_NUL takes the blank text already, and "" would then match both branches.
        branches = schema.get("oneOf")
        blank = {"type": "string", "maxLength": 0}
        if branches and len(branches) == 2 and branches[1] == blank and branches[0].get("pattern") == NO_NUL:
            del schema["oneOf"]
            schema.update(branches[0])

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictInputSerializer):
            schema["additionalProperties"] = False
            variants = [_required_when(serializer), _one_group_of(serializer)]
            variants = [variant for variant in variants if variant]
            if len(variants) == 1:
                schema["oneOf"] = variants[0]
            elif variants:
                schema["allOf"] = [{"oneOf": variant} for variant in variants]
        return schema


def _has_regex(field) -> bool:
    from django.core.validators import RegexValidator

    return any(isinstance(validator, RegexValidator) for validator in field.validators)


def _required_when(serializer: StrictInputSerializer) -> list[dict]:
    variants: list[dict] = []
    if len(serializer.required_when) > 1:
        raise ValueError("one oneOf per serializer: required_when may name one field")
    for name, requirements in serializer.required_when.items():
        for value in serializer.fields[name].choices:
            # A pattern, not {"enum": [value]}: drf-spectacular would hoist that enum into a
            # shared component by the field's name and merge it with the field's own choices.
            variant: dict = {"properties": {name: {"type": "string", "pattern": f"^{re.escape(value)}$"}}}
            if requirements.get(value):
                variant["required"] = list(requirements[value])
            variants.append(variant)
    return variants


def _one_group_of(serializer: StrictInputSerializer) -> list[dict]:
    groups = serializer.one_group_of
    variants = []
    for group in groups:
        others = sorted({name for other in groups if other is not group for name in other})
        variants.append({"required": list(group), "not": {"anyOf": [{"required": [n]} for n in others]}})
    return variants
