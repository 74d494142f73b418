"""The product's settings with the bench's URL map (``bench.urls``): the EA bench's
gunicorn runs with ``DJANGO_SETTINGS_MODULE=bench.settings``, so the bare endpoint it
compares against never reaches the product's URLs."""

from __future__ import annotations

from config.settings import *  # noqa: F403 - the product's settings, unchanged but for the URL map

ROOT_URLCONF = "bench.urls"
