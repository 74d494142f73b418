"""The EA loop: take approved signals to the broker, carry out close commands,
report the account.

A broker order must never be sent twice for one approval or one close
command, even when the server's answer to an acknowledgement is lost or the
EA restarts. Per approval and per command id the client keeps, in an
``ExecutedStore`` (store.py; a SQLite file with ``--state``), first its
intent, then the broker's result, then the server's confirmation, and each is
on disk before the next step starts:

1. A delivery of an id with a result is answered by sending that same
   acknowledgement again (the server treats it as idempotent), never by
   trading again.
2. A delivery of an id with an intent and no result means the process died
   while the broker had the order. A close is then settled from the broker:
   the intent holds how many closing fills the ticket had, and a fill since
   then is the close that was sent (acknowledged as executed, at its price);
   none means the order never reached the broker, and only then is it sent.
   A placement cannot be matched that way (the ticket is not known before the
   fill), so it is acknowledged as failed: a position the owner must look at
   is better than a second one.

By default the client long-polls (``?wait=N``, docs/ea-protocol.md section
9): one thread waits on close commands, one on approvals, and the heartbeat
runs on its own clock, so a close reaches the broker as soon as the server
queues it rather than at the next poll. ``long_poll_seconds=0`` falls back to
plain polling, one cycle every interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Protocol

from ea_client.executors import DIRECTIONS, CloseFill, ExecutionError, Executor
from ea_client.store import ExecutedStore, Outcome
from ea_client.transport import ProtocolError, Response, UnavailableError

POLL_PATH = "/api/v1/client/poll"
ACK_PATH = "/api/v1/client/ack"
CLOSE_COMMANDS_PATH = "/api/v1/client/close-commands"
CLOSE_ACK_PATH = "/api/v1/client/close-ack"
HEARTBEAT_PATH = "/api/v1/client/heartbeat"

# The default wait of a long-poll: under the server's bound (30 s) and under the
# idle timeout of the usual proxy. The HTTP timeout of a long-poll is the wait
# plus this margin, so a slow answer is never cut off as a dead connection.
LONG_POLL_SECONDS = 25
LONG_POLL_MAX_SECONDS = 30
LONG_POLL_TIMEOUT_MARGIN_SECONDS = 10

# Broker messages can be long; the owner needs a reason, not a log.
MAX_ERROR_LENGTH = 200
# Decimals the server accepts (docs/ea-protocol.md, section 2).
PRICE_PLACES = 10
VOLUME_PLACES = 2
MONEY_PLACES = 2


class Transport(Protocol):
    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Response: ...


@dataclass(frozen=True)
class Delivery:
    """One acknowledgement sent: ``reply`` is the server's answer, or None with
    ``error`` when it was not confirmed (then it may be sent again later)."""

    item_id: int
    body: dict[str, Any]
    reply: dict[str, Any] | None = None
    error: str | None = None


class _Outbox:
    """One kind of acknowledgement (approvals or close commands) in the store."""

    def __init__(self, store: ExecutedStore, kind: str, path: str, id_field: str) -> None:
        self.store = store
        self.kind = kind
        self.path = path
        self.id_field = id_field

    def get(self, item_id: int) -> Outcome | None:
        return self.store.get(self.kind, item_id)

    def begin(self, item_id: int, intent: dict[str, Any]) -> None:
        self.store.begin(self.kind, item_id, intent)

    def record(self, item_id: int, body: dict[str, Any]) -> None:
        self.store.record(self.kind, item_id, body)

    def result(self, item_id: int) -> dict[str, Any]:
        outcome = self.get(item_id)
        if outcome is None or outcome.result is None:
            raise RuntimeError(f"{self.id_field} {item_id} has no recorded result")
        return outcome.result

    def unconfirmed(self) -> list[int]:
        return self.store.unconfirmed(self.kind)

    def confirm(self, item_id: int) -> None:
        self.store.confirm(self.kind, item_id)

    def unconfirm(self, item_id: int) -> None:
        self.store.unconfirm(self.kind, item_id)


@dataclass(frozen=True)
class _Steps:
    """How one kind of item is executed: the intent kept before the broker is
    asked (None: do not ask it now), the execution, and the recovery of an
    intent whose result a dead process never recorded."""

    intent: Callable[[int, Mapping[str, Any]], dict[str, Any] | None]
    execute: Callable[[int, Mapping[str, Any]], dict[str, Any]]
    recover: Callable[[int, Mapping[str, Any], dict[str, Any]], dict[str, Any] | None]


class EAClient:
    """Speaks the Veilstop EA protocol for one device. ``run_forever`` runs its
    own threads; call the other methods from one thread at a time."""

    def __init__(
        self,
        transport: Transport,
        executor: Executor,
        *,
        logger: logging.Logger | None = None,
        long_poll_seconds: int = LONG_POLL_SECONDS,
        store: ExecutedStore | None = None,
    ) -> None:
        if not 0 <= long_poll_seconds <= LONG_POLL_MAX_SECONDS:
            raise ValueError(f"long_poll_seconds must be 0 to {LONG_POLL_MAX_SECONDS}: {long_poll_seconds}")
        self._transport = transport
        self._executor = executor
        self._log = logger or logging.getLogger("ea_client")
        # In memory unless the caller keeps it on disk (python -m ea_client --state does).
        self.store = store or ExecutedStore(":memory:")
        self._acks = _Outbox(self.store, "approval", ACK_PATH, "approval_id")
        self._close_acks = _Outbox(self.store, "close", CLOSE_ACK_PATH, "command_id")
        self._placing = _Steps(intent=_nothing_to_note, execute=self._place, recover=self._recover_place)
        self._closing = _Steps(intent=self._close_intent, execute=self._close, recover=self._recover_close)
        self.long_poll_seconds = long_poll_seconds
        # The broker is driven from several threads under run_forever: one at a time,
        # and a trade with its acknowledgement before the heartbeat reports the account.
        self._broker_lock = threading.Lock()
        self._stopping = threading.Event()  # set by run_forever's stop: place no new trade

    def poll_and_execute(self, wait: int = 0) -> list[Delivery]:
        """Acknowledge what is still unconfirmed, then place every newly
        approved signal and acknowledge it. ``wait``: long-poll up to that many
        seconds for one."""
        return self._work(self._acks, POLL_PATH, "approvals", self._placing, wait, self._stopping)

    def execute_close_commands(self, wait: int = 0) -> list[Delivery]:
        """Acknowledge what is still unconfirmed, then carry out every close
        command delivered and acknowledge it. ``wait``: long-poll up to that
        many seconds for one."""
        # A close that arrives while stopping is still carried out: it protects money.
        return self._work(self._close_acks, CLOSE_COMMANDS_PATH, "commands", self._closing, wait, None)

    def send_heartbeat(self) -> int:
        """Report balance, equity and open tickets; returns the server's time."""
        with self._broker_lock:
            account = self._executor.account()
        body = {
            "balance": _decimal_text(account.balance, MONEY_PLACES, pad=True),
            "equity": _decimal_text(account.equity, MONEY_PLACES, pad=True),
            "open_tickets": [str(ticket) for ticket in account.open_tickets],
        }
        reply = self._transport.request("POST", HEARTBEAT_PATH, body=body).json
        server_time = reply.get("server_time") if isinstance(reply, dict) else None
        if not isinstance(server_time, int) or isinstance(server_time, bool):
            raise ProtocolError(200, "invalid_response", "heartbeat reply has no integer server_time")
        return server_time

    def run_once(self) -> bool:
        """One cycle: closes first (they protect money), then new trades, then
        the heartbeat (so it lists this cycle's tickets). A failing step is
        logged and does not stop the others. True when every step succeeded."""
        ok = True
        for step in (self.execute_close_commands, self.poll_and_execute, self.send_heartbeat):
            try:
                result = step()
            except Exception:
                self._log.exception("%s failed", step.__name__)
                ok = False
                continue
            if isinstance(result, list) and any(delivery.error for delivery in result):
                ok = False
        return ok

    def run_forever(self, interval: float, stop_event: threading.Event) -> None:
        """Until ``stop_event`` is set: long-poll close commands and approvals
        (each in its own thread, waiting ``long_poll_seconds``) and send a
        heartbeat every ``interval`` seconds; with ``long_poll_seconds=0``, a
        plain cycle (``run_once``) every ``interval`` seconds."""
        if not self.long_poll_seconds:
            while not stop_event.is_set():
                started = time.monotonic()
                self.run_once()
                stop_event.wait(max(0.0, interval - (time.monotonic() - started)))
            return
        for step in (self.execute_close_commands, self.poll_and_execute):
            # Daemon threads: a stop does not wait for a long-poll in flight to answer.
            threading.Thread(
                target=self._keep_polling, args=(step, interval, stop_event), name=step.__name__, daemon=True
            ).start()
        while not stop_event.is_set():
            started = time.monotonic()
            try:
                self.send_heartbeat()
            except Exception:
                self._log.exception("send_heartbeat failed")
            stop_event.wait(max(0.0, interval - (time.monotonic() - started)))
        self._stopping.set()
        with self._broker_lock:
            pass  # a trade in hand is finished and acknowledged before returning

    def _keep_polling(
        self, step: Callable[..., list[Delivery]], interval: float, stop_event: threading.Event
    ) -> None:
        while not stop_event.is_set():
            started = time.monotonic()
            try:
                deliveries = step(wait=self.long_poll_seconds)
                pause = any(delivery.error for delivery in deliveries) or not deliveries
            except Exception:
                self._log.exception("%s failed", step.__name__)
                pause = True
            if pause:
                # After an error, or an empty answer that came early (a server that
                # ignores wait, or restarting), wait out the interval: never spin.
                stop_event.wait(max(0.0, interval - (time.monotonic() - started)))

    def _work(
        self,
        outbox: _Outbox,
        path: str,
        key: str,
        steps: _Steps,
        wait: int,
        stopping: threading.Event | None,
    ) -> list[Delivery]:
        with self._broker_lock:
            deliveries = self._flush(outbox)
        reply = (
            self._transport.request(
                "GET", path, query={"wait": wait}, timeout=wait + LONG_POLL_TIMEOUT_MARGIN_SECONDS
            )
            if wait
            else self._transport.request("GET", path)
        )
        items = _items(reply, key)
        if stopping is not None and stopping.is_set():
            return deliveries  # no new trade while stopping; the approval stays for the next run
        with self._broker_lock:
            return self._execute_all(outbox, path, items, steps, deliveries)

    def _execute_all(
        self,
        outbox: _Outbox,
        path: str,
        items: list[Mapping[str, Any]],
        steps: _Steps,
        deliveries: list[Delivery],
    ) -> list[Delivery]:
        sent = {delivery.item_id for delivery in deliveries}
        for item in items:
            item_id = _item_id(item, outbox.id_field)
            if item_id is None:
                self._log.error("%s returned an item without a usable %s: %r", path, outbox.id_field, item)
                continue
            outcome = outbox.get(item_id)
            if outcome is not None and outcome.result is not None:
                # Executed before and delivered again (our ack was lost, or a
                # close command's lease ran out): answer with the stored result,
                # never trade a second time.
                self._log.warning(
                    "%s %s delivered again; re-sending its acknowledgement", outbox.id_field, item_id
                )
                outbox.unconfirm(item_id)
            elif outcome is not None:
                # Begun by a process that died before keeping the broker's answer.
                self._log.warning(
                    "%s %s was with the broker when the EA stopped; settling it from the broker",
                    outbox.id_field,
                    item_id,
                )
                recovered = steps.recover(item_id, item, outcome.intent)
                if recovered is None:
                    continue  # the broker could not say; asked again at the next delivery
                outbox.record(item_id, recovered)
            else:
                intent = steps.intent(item_id, item)
                if intent is None:
                    continue  # not asked now; the server delivers it again after its lease
                outbox.begin(item_id, intent)
                outbox.record(item_id, steps.execute(item_id, item))
            if item_id not in sent:
                deliveries.append(self._deliver(outbox, item_id))
                sent.add(item_id)
        return deliveries

    def _recover_place(self, approval_id: int, approval: Mapping[str, Any], intent: dict[str, Any]) -> dict:
        # Whether the order reached the market is unknown and there is no ticket to
        # ask about: placing again risks a second position, which is worse.
        return _failed("approval_id", approval_id, "outcome unknown: the EA stopped while placing it")

    def _close_intent(self, command_id: int, command: Mapping[str, Any]) -> dict[str, Any] | None:
        ticket = command.get("broker_ticket")
        if not isinstance(ticket, str) or not ticket:
            return {"ticket": None}  # _close refuses it without asking the broker
        try:
            fills_before = len(self._executor.closing_fills(ticket))
        except Exception:
            # Without the count a restart could not tell whether this close went
            # through; leave the command to its next delivery.
            self._log.exception("close command %s: cannot read the fills of ticket %s", command_id, ticket)
            return None
        return {"ticket": ticket, "fills_before": fills_before}

    def _recover_close(
        self, command_id: int, command: Mapping[str, Any], intent: dict[str, Any]
    ) -> dict[str, Any] | None:
        ticket = intent.get("ticket")
        if ticket is None:
            return self._close(command_id, command)
        try:
            fills = self._executor.closing_fills(ticket)[intent["fills_before"] :]
        except Exception:
            self._log.exception("close command %s: cannot read the fills of ticket %s", command_id, ticket)
            return None
        if not fills:
            # No closing fill since the intent: the order never reached the broker,
            # and this is the only time it is sent.
            return self._close(command_id, command)
        fill = _combined(fills)
        self._log.info(
            "close command %s had been executed before the restart: ticket %s, %s lots at %s",
            command_id,
            ticket,
            fill.volume,
            fill.price,
        )
        return _executed(command_id, fill)

    def _place(self, approval_id: int, approval: Mapping[str, Any]) -> dict[str, Any]:
        try:
            params = approval["execution_params"]
            instrument = str(params["instrument"])
            direction = str(params["direction"])
            entry_price = _positive_decimal(params["entry_price"])
            volume = _positive_decimal(params["volume"])
            if direction not in DIRECTIONS:
                raise ValueError(f"unknown direction {direction!r}")
        except (KeyError, TypeError, ValueError, InvalidOperation) as error:
            self._log.error("approval %s has invalid execution params: %s", approval_id, error)
            return _failed("approval_id", approval_id, f"invalid execution params: {error}")
        try:
            fill = self._executor.place(instrument, direction, volume, entry_price)
        except ExecutionError as error:
            self._log.warning("approval %s rejected by the broker: %s", approval_id, error)
            return _failed("approval_id", approval_id, str(error))
        except Exception as error:
            # Whether the order reached the market is unknown. Reporting a
            # failure risks an untracked position; retrying risks a second
            # one, which is worse, so the approval is settled as failed.
            self._log.exception("approval %s: executor error", approval_id)
            return _failed("approval_id", approval_id, f"executor error: {type(error).__name__}: {error}")
        self._log.info(
            "approval %s placed: %s %s %s at %s, ticket %s",
            approval_id,
            direction,
            fill.volume,
            instrument,
            fill.price,
            fill.ticket,
        )
        return {
            "approval_id": approval_id,
            "status": "placed",
            "broker_ticket": fill.ticket,
            "entry_price": _decimal_text(fill.price, PRICE_PLACES),
            "volume": _decimal_text(fill.volume, VOLUME_PLACES),
        }

    def _close(self, command_id: int, command: Mapping[str, Any]) -> dict[str, Any]:
        try:
            ticket = command["broker_ticket"]
            if not isinstance(ticket, str) or not ticket:
                raise ValueError(f"broker_ticket must be a non-empty string, got {ticket!r}")
            volume = _positive_decimal(command["volume"])
        except (KeyError, TypeError, ValueError, InvalidOperation) as error:
            self._log.error("close command %s is invalid: %s", command_id, error)
            return _failed("command_id", command_id, f"invalid close command: {error}")
        try:
            fill = self._executor.close(ticket, volume)
        except ExecutionError as error:
            self._log.error(
                "close command %s (ticket %s) rejected by the broker: %s", command_id, ticket, error
            )
            return _failed("command_id", command_id, str(error))
        except Exception as error:
            # As for placing: never risk closing twice on an unknown outcome.
            self._log.exception("close command %s: executor error", command_id)
            return _failed("command_id", command_id, f"executor error: {type(error).__name__}: {error}")
        self._log.info(
            "close command %s executed: ticket %s, %s lots at %s", command_id, ticket, fill.volume, fill.price
        )
        return _executed(command_id, fill)

    def _flush(self, outbox: _Outbox) -> list[Delivery]:
        return [self._deliver(outbox, item_id) for item_id in outbox.unconfirmed()]

    def _deliver(self, outbox: _Outbox, item_id: int) -> Delivery:
        body = outbox.result(item_id)
        try:
            reply = self._transport.request("POST", outbox.path, body=body)
        except UnavailableError as error:
            self._log.warning(
                "%s %s %s not confirmed, will re-send: %s", outbox.path, outbox.id_field, item_id, error
            )
            return Delivery(item_id, body, error=str(error))
        except ProtocolError as error:
            if error.status == 401:
                # Credentials or clock; the result is still owed to the server.
                self._log.error(
                    "%s %s %s refused (%s), will re-send", outbox.path, outbox.id_field, item_id, error
                )
            else:
                # 409: the server holds a different result for this id; 404: not
                # ours or gone; 400: the body itself is wrong. Re-sending the same
                # body cannot change any of these answers.
                outbox.confirm(item_id)  # settled: nothing left to send
                self._log.error(
                    "%s %s %s refused, not re-sending: %s (sent %r)",
                    outbox.path,
                    outbox.id_field,
                    item_id,
                    error,
                    body,
                )
            return Delivery(item_id, body, error=str(error))
        outbox.confirm(item_id)
        answer = reply.json if isinstance(reply.json, dict) else {}
        self._log.debug("%s %s %s confirmed: %r", outbox.path, outbox.id_field, item_id, answer)
        return Delivery(item_id, body, reply=answer)


def _items(response: Response, key: str) -> list[Mapping[str, Any]]:
    payload = response.json
    items = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ProtocolError(
            response.status, "invalid_response", f"reply has no list of objects under {key!r}"
        )
    return items


def _item_id(item: Mapping[str, Any], field: str) -> int | None:
    value = item.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _positive_decimal(value: object) -> Decimal:
    # Decimal(float) would smuggle binary noise into a price; the protocol sends strings.
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TypeError(f"expected a decimal string, got {value!r}")
    number = Decimal(value)
    if not number.is_finite() or number <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


def _decimal_text(value: Decimal, places: int, *, pad: bool = False) -> str:
    # The server refuses more decimals than it stores, and a broker's floats
    # carry binary noise (10000.300000000001); round only what is beyond the
    # limit, so "2650.4" stays "2650.4". "f" never writes an exponent.
    quantum = Decimal(1).scaleb(-places)
    exponent = value.as_tuple().exponent
    if pad or (isinstance(exponent, int) and exponent < -places):
        value = value.quantize(quantum, ROUND_HALF_EVEN)
    return format(value, "f")


def _nothing_to_note(item_id: int, item: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _combined(fills: list[CloseFill]) -> CloseFill:
    volume = sum((fill.volume for fill in fills), Decimal(0))
    if len(fills) == 1 or not volume:
        return CloseFill(price=fills[-1].price, volume=volume)
    return CloseFill(
        price=sum((fill.price * fill.volume for fill in fills), Decimal(0)) / volume, volume=volume
    )


def _executed(command_id: int, fill: CloseFill) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "status": "executed",
        "close_price": _decimal_text(fill.price, PRICE_PLACES),
        "closed_volume": _decimal_text(fill.volume, VOLUME_PLACES),
    }


def _failed(id_field: str, item_id: int, error: str) -> dict[str, Any]:
    return {id_field: item_id, "status": "failed", "error": error[:MAX_ERROR_LENGTH]}
