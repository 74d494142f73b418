from __future__ import annotations

import os

import pytest
from django.conf import settings
from hypothesis import settings as hypothesis_settings

from tests.helpers import redis_server_version

# The local Bot API stand-in and SMTP server fixtures (``telegram``, ``mailbox``).
pytest_plugins = ["tests.notify_servers"]

# `make test` runs the same generated examples every time, so CI never fails on a draw it
# has not seen before; HYPOTHESIS_PROFILE=explore draws new ones (run it now and then).
hypothesis_settings.register_profile("repeatable", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def pytest_report_header(config) -> list[str]:
    # Printed at the top of every run: the suite talks to real servers.
    database = settings.DATABASES["default"]
    where = database.get("HOST") or "localhost"
    return [
        f"database: PostgreSQL ({database['ENGINE']}) at {where}, test database {database['TEST']['NAME']}",
        f"redis: {settings.REDIS_URL} (server {redis_server_version()})",
    ]


@pytest.fixture
def redis_client():
    """The real Redis the product uses, emptied before and after the test."""
    from core.redis import get_redis

    client = get_redis()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(autouse=True)
def _postgres_only(request) -> None:
    if "django_db_setup" in request.fixturenames:
        from django.db import connection

        assert connection.vendor == "postgresql"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, and before it drops the test database: the connections the mass
    claim's threads keep (positions.claim_apart) closed, or the drop would wait on them."""
    yield
    from positions.claim_apart import pool_close

    pool_close()


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def _seeded_instruments(request) -> None:
    """Transactional tests end with a TRUNCATE, which also removes the instruments
    migration 0002 seeds; put them back for whichever test comes next, with the quote
    currencies migration 0009 gives them (USDJPY in JPY)."""
    uses_database = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db", "django_db_reset_sequences"} & set(request.fixturenames)
    )
    if not uses_database:
        return
    from importlib import import_module

    from django.apps import apps

    from signals_app.models import Instrument

    if not Instrument.objects.exists():
        import_module("signals_app.migrations.0002_seed_instruments").seed(apps, None)
        import_module("signals_app.migrations.0009_instrument_quote_currency").currencies(apps, None)


@pytest.fixture(autouse=True)
def _fresh_plan_books() -> None:
    """Each test's database is rolled back (or truncated) after it, versions included: a
    sweep worker's books (kept in this process) must not outlive the data they describe."""
    from positions.plan_book import books_clear

    books_clear()


@pytest.fixture
def recorded_logs():
    """Every log record at INFO or above from every logger, while the test runs
    (``tests.secrecy.RecordingHandler``): what the secrecy tests scan."""
    import logging

    from tests.secrecy import RecordingHandler

    handler = RecordingHandler()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
