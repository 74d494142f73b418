"""The reference client on a simulated broker that dies the moment a close has been filled.

``python -m tests.ea_client.crashing_ea URL KEY BROKER_STATE EA_STATE``: the same
client as ``python -m ea_client`` (signed transport, executed-id store, simulated
broker kept in a file), except that the broker SIGKILLs this process right after
it filled a close and wrote it down, before the client could record the result:
the one window the intent row exists for. The secret comes from
VEILSTOP_EA_SECRET.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from decimal import Decimal

from ea_client.client import EAClient
from ea_client.executors import CloseFill, SimulatedBroker
from ea_client.store import ExecutedStore
from ea_client.transport import SignedTransport


class DiesAfterClosing(SimulatedBroker):
    def close(self, ticket: str, volume: Decimal) -> CloseFill:
        fill = super().close(ticket, volume)  # filled and on disk, like a broker's deal
        os.kill(os.getpid(), signal.SIGKILL)
        return fill


def main() -> None:
    url, key, broker_state, ea_state = sys.argv[1:5]
    transport = SignedTransport(url, key, os.environ["VEILSTOP_EA_SECRET"], max_retries=0)
    client = EAClient(
        transport,
        DiesAfterClosing(state_path=broker_state),
        long_poll_seconds=0,
        store=ExecutedStore(ea_state),
    )
    while True:
        client.run_once()
        time.sleep(0.1)


if __name__ == "__main__":
    main()
