"""Changelists fit for large tables: filters by id (no list of every client or signal), no facets."""

from __future__ import annotations

import pytest

from positions.choices import CloseReason
from positions.closes import close_command_request
from signals_app.events import Actor
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_signals():
    first, second = make_signal(), make_signal()
    return (first, open_book(first, 2)), (second, open_book(second, 1))


def test_positions_filter_by_client_and_signal_id(owner_browser, two_signals):
    (first, first_positions), (second, second_positions) = two_signals
    client = first_positions[1].client

    by_signal = owner_browser.get(f"/admin/positions/openposition/?signal={second.pk}")
    by_client = owner_browser.get(f"/admin/positions/openposition/?client={client.pk}&status__exact=open")

    assert [p.pk for p in by_signal.context["cl"].result_list] == [second_positions[0].pk]
    assert [p.pk for p in by_client.context["cl"].result_list] == [first_positions[1].pk]
    page = by_client.content.decode()
    assert f'name="client" value="{client.pk}"' in page
    assert client.name in page  # the filter names what the id is
    assert '<input type="hidden" name="status__exact" value="open">' in page  # other filters kept


def test_close_commands_filter_by_signal_and_client_of_their_position(owner_browser, two_signals):
    (first, first_positions), (second, second_positions) = two_signals
    by = Actor.system("tests")
    commands = [
        close_command_request(position=position, reason=CloseReason.MANUAL, by=by)
        for position in [*first_positions, *second_positions]
    ]

    by_signal = owner_browser.get(f"/admin/positions/closecommand/?signal={first.pk}")
    by_client = owner_browser.get(f"/admin/positions/closecommand/?client={second_positions[0].client_id}")

    assert sorted(c.pk for c in by_signal.context["cl"].result_list) == sorted(c.pk for c in commands[:2])
    assert [c.pk for c in by_client.context["cl"].result_list] == [commands[2].pk]


def test_a_non_numeric_id_is_an_invalid_filter_not_an_error(owner_browser, two_signals):
    response = owner_browser.get("/admin/positions/openposition/?client=abc")

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_no_facet_counts_on_the_big_tables(owner_browser, two_signals):
    for model in ("openposition", "closecommand", "alert"):
        response = owner_browser.get(f"/admin/positions/{model}/?_facets=True")
        assert response.status_code == 200
        assert response.context["cl"].add_facets is False
