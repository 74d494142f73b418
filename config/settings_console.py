"""The owner console's theme, django-unfold (README: Owner console); read by config.settings.

The sidebar lists the monitor dashboard, the guards page and the apps' tables, each under
the permission its page asks for, so a staff user sees only what they may open. Every
font, stylesheet and script is served from our static files (unfold ships them): the
console loads nothing from another origin."""

from __future__ import annotations

from django.templatetags.static import static
from django.urls import reverse_lazy


def _may(*permissions: str):
    """Unfold's permission callback: the sidebar shows the item to who holds ``permissions``."""
    return lambda request: request.user.has_perms(permissions)


def _table(title: str, icon: str, app_label: str, model_name: str) -> dict:
    return {
        "title": title,
        "icon": icon,
        "link": reverse_lazy(f"admin:{app_label}_{model_name}_changelist"),
        "permission": _may(f"{app_label}.view_{model_name}"),
    }


# Unfold's login form carries no "next" field (Django's admin login does): a login that
# did not start from a console page goes to the console's index, not /accounts/profile/.
LOGIN_REDIRECT_URL = reverse_lazy("admin:index")

UNFOLD = {
    "SITE_TITLE": "Veilstop owner console",
    "SITE_HEADER": "Veilstop owner console",
    "SITE_SYMBOL": "monitoring",  # a Material Symbols glyph from unfold's own font file
    # The header's "view site" link: the monitor dashboard is the console's home page.
    "SITE_URL": reverse_lazy("monitor-dashboard"),
    "SHOW_HISTORY": True,
    "SHOW_VIEW_ON_SITE": False,
    # Plain HTML on custom console pages (tables, modules, headings, object tools) in
    # unfold's layout: static/console/console.css.
    "STYLES": [lambda request: static("console/console.css")],
    "SIDEBAR": {
        "show_search": False,
        # Django's own tables (users, groups, API tokens, periodic tasks) under "All applications".
        "show_all_applications": True,
        "navigation": [
            {
                "title": "Monitor",
                "items": [
                    {
                        "title": "Monitor dashboard",
                        "icon": "monitoring",
                        "link": reverse_lazy("monitor-dashboard"),
                        # admin_view: any active staff user may open it.
                        "permission": lambda request: request.user.is_active and request.user.is_staff,
                    },
                    {
                        "title": "Risk guards",
                        "icon": "shield",
                        "link": reverse_lazy("guards-page"),
                        "permission": _may("positions.view_clientguard"),
                    },
                    _table("Alerts", "notifications", "positions", "alert"),
                ],
            },
            {
                "title": "Signals",
                "items": [
                    _table("Signals", "signal_cellular_alt", "signals_app", "signal"),
                    _table("Approvals", "task_alt", "signals_app", "approval"),
                    _table("Clients", "group", "signals_app", "client"),
                    _table("Instruments", "candlestick_chart", "signals_app", "instrument"),
                ],
            },
            {
                "title": "Positions",
                "items": [
                    {
                        "title": "Live book",
                        "icon": "query_stats",
                        "link": reverse_lazy("admin:positions_openposition_live"),
                        # Distances reveal the levels: the page asks for both (positions.admin.live).
                        "permission": _may("positions.view_openposition", "signals_app.view_hidden_levels"),
                    },
                    _table("Positions", "account_balance_wallet", "positions", "openposition"),
                    _table("Close commands", "cancel_schedule_send", "positions", "closecommand"),
                    _table("Client guards", "gpp_maybe", "positions", "clientguard"),
                ],
            },
            {
                "title": "Devices and delivery",
                "items": [
                    _table("Devices", "devices", "ea_gateway", "device"),
                    _table("Outbox messages", "outbox", "signals_app", "outboxmessage"),
                    _table("Heartbeats", "ecg_heart", "monitoring", "heartbeat"),
                    _table("Audit events", "history", "signals_app", "auditevent"),
                ],
            },
        ],
    },
}
