from __future__ import annotations

import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_creates_the_owner_once_and_keeps_the_password_out_of_the_output(tmp_path, capsys):
    credentials = tmp_path / "owner-credentials.txt"

    call_command("ensure_owner", credentials_file=credentials)
    first_output = capsys.readouterr().out
    call_command("ensure_owner", credentials_file=credentials)
    second_output = capsys.readouterr().out

    owner = get_user_model().objects.get(username="owner")
    assert owner.is_superuser
    assert owner.is_staff
    password = credentials.read_text().split("password: ")[1].strip()
    assert owner.check_password(password)
    assert password not in first_output
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert str(credentials) in first_output
    assert "exists" in second_output
    assert get_user_model().objects.count() == 1


def test_owner_can_log_in_to_the_admin(client, tmp_path):
    credentials = tmp_path / "owner-credentials.txt"
    call_command("ensure_owner", credentials_file=credentials)
    password = credentials.read_text().split("password: ")[1].strip()

    response = client.post("/admin/login/?next=/admin/", {"username": "owner", "password": password})

    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200
    assert b"Veilstop owner console" in page.content
