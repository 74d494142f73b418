"""The one JSON parser every API endpoint uses: JSON as the server can store and
reason about it, or a 400 that says what is wrong.

Refused, before any view sees the body:

- a body that is not UTF-8 or not JSON (DRF's own check);
- nesting deeper than ``MAX_JSON_DEPTH`` objects and arrays (no request of the
  API nests more than a few levels; a 100,000-deep body would otherwise reach
  the interpreter's recursion limit);
- a string (value or key) holding U+0000 or a lone surrogate: PostgreSQL
  cannot store either in text or JSON, and no client has a use for them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 16
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError:
            raise ParseError(f"The body is not valid {encoding}.") from None
        except LookupError:  # a charset Python knows no text codec for (or none at all)
            raise ParseError(f"Unsupported charset: {encoding}.") from None
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from None
        except ValueError as error:
            raise ParseError(f"The body is not valid JSON: {error}") from None
        json_check(data)
        return data


def json_check(data: Any) -> None:
    """Raise ParseError for nesting beyond MAX_JSON_DEPTH or an unstorable string.
    Iterative: the check itself never recurses."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key)
                pending.append((item, depth + 1))


def _check_text(text: str) -> None:
    if _UNSTORABLE.search(text):
        raise ParseError("Strings may not hold U+0000 or unpaired surrogates (\\ud800-\\udfff).")


def _refuse_constant(name: str) -> None:
    raise ParseError(f"{name} is not JSON.")
