"""A client's risk guards: the drawdown guard and the daily loss limit.

- ``rules``: the pure arithmetic (an account's equity step with the jump rule, the
  figures, the breach), no Django;
- ``equity``: a heartbeat's equity recorded and judged; a breach trips the client;
- ``trip``: tripping (closes through the one close claim, alert, audit), the re-arm, and
  the periodic check (stale equity alerts, closes of positions opened after a trip);
- ``selectors``: the guards' status figures; ``api``: ``GET /api/v1/guards/status``.
"""
