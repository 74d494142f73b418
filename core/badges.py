"""Status words as the console's lists show them: unfold badges (``@display(label=...)``),
one short word or two that never wrap nor get cut, coloured by what the owner should do
about them (danger: act; warning: in flight; success: done; info: live; none: history).
The full wording stays on the change page and in the filters."""

from __future__ import annotations

from collections.abc import Mapping

DANGER, WARNING, SUCCESS, INFO, PRIMARY = "danger", "warning", "success", "info", "primary"


def badge(value: str, words: Mapping[str, str]) -> tuple[str, str]:
    """What a ``@display(label={value: colour})`` column returns: unfold colours the badge by
    ``value`` and shows the short word (the value itself, spaced, if it has none)."""
    return value, words.get(value, value.replace("_", " "))
