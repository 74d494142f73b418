"""The owner console for positions. Importing the tables registers them with the admin site.

- ``tables``: the read-only tables (positions, close commands, alerts; alert
  acknowledgement is the alerts table's action);
- ``filters``: their list filters;
- ``owner_tools``: the owner views that act on positions through services (manual close,
  test-breach), hung off the positions table's ``get_urls()``; its docstring says who may
  use them and why;
- ``signal_chart``: a signal's chart (candles, hidden levels, fills, closes), owner only;
- ``live``: the live book (owner only): live columns on the positions table and the
  per-signal and per-client page, from ``positions.live``;
- ``forms``: the owner tools' forms;
- ``guards``: the clients' risk guards, re-armed by an action.
"""

from __future__ import annotations

from positions.admin.guards import ClientGuardAdmin
from positions.admin.tables import AlertAdmin, CloseCommandAdmin, OpenPositionAdmin

__all__ = ["AlertAdmin", "ClientGuardAdmin", "CloseCommandAdmin", "OpenPositionAdmin"]
