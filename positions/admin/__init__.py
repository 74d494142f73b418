"""The owner console for positions. Importing the tables registers them with the admin site.

- ``tables``: the read-only tables (positions, close commands, alerts; alert
  acknowledgement is the alerts table's action);
- ``filters``: their list filters;
- ``owner_tools``: the owner views that act on positions through services (manual close,
  test-breach), hung off the positions table's ``get_urls()``; its docstring says who may
  use them and why;
- ``forms``: the owner tools' forms.
"""

from __future__ import annotations

from positions.admin.tables import AlertAdmin, CloseCommandAdmin, OpenPositionAdmin

__all__ = ["AlertAdmin", "CloseCommandAdmin", "OpenPositionAdmin"]
