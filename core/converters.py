from __future__ import annotations

from django.urls import register_converter


class IdConverter:
    """A primary key in a URL: digits that fit a PostgreSQL bigint, so a huge
    number is a 404 rather than a database error."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")
