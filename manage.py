#!/usr/bin/env python
"""Django's command-line utility, and a launcher: with DATABASE_URL / REDIS_URL unset
(outside production) it starts, or reuses, the embedded PostgreSQL and Redis under
.state/ first, so `python manage.py ...` works on a machine with neither. Settings
themselves never start anything."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if os.environ.get("DJANGO_ENV", "").lower() != "production":
        from config import embedded

        embedded.export_urls()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
