from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ea_client.signed_server import (
    KEY,
    SECRET,
    SERVER_NOW,
    Handler,
    Serve,
    SignedServer,
    Sleeps,
    scripted,
)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start signature-checking servers (clock at SERVER_NOW, device KEY/SECRET)
    answering ``replies`` in order, then 200 ``{}``, or through ``handler``."""
    started: list[SignedServer] = []

    def start(*replies: object, handler: Handler | None = None) -> SignedServer:
        server = SignedServer({KEY: SECRET}, handler or scripted(*replies), now=lambda: SERVER_NOW).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(serve: Serve) -> SignedServer:
    return serve()


@pytest.fixture(autouse=True)
def _state_in_tmp(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # python -m ea_client keeps its executed ids under $VEILSTOP_EA_STATE_DIR: not in ~ during tests.
    monkeypatch.setenv("VEILSTOP_EA_STATE_DIR", str(tmp_path / "ea-state"))
