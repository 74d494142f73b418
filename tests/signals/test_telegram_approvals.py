"""Approving from Telegram: a chat is linked only by a one-time code, the Approve / Skip
buttons decide the client's own approval once and only before its TTL, and the webhook
refuses any request without Telegram's secret header."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from monitoring.notifications.delivery import outbox_deliver
from signals_app.choices import ApprovalStatus, OutboxTemplate
from signals_app.events import Actor
from signals_app.models import Approval, AuditEvent, Client, OutboxMessage, TelegramLinkCode
from signals_app.telegram import telegram_link_code_create
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, OwnerFactory, make_signal

pytestmark = pytest.mark.django_db
SECRET = "webhook-secret_1"
WEBHOOK = "/api/v1/telegram/webhook"


@pytest.fixture
def webhook_on(settings):
    settings.TELEGRAM_WEBHOOK_SECRET = SECRET


def _post(http, update, secret: str | None = SECRET):
    headers = {"HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": secret} if secret is not None else {}
    return http.post(WEBHOOK, json.dumps(update), content_type="application/json", **headers)


def _start(chat_id: int, code: str) -> dict:
    return {"update_id": 1, "message": {"message_id": 1, "chat": {"id": chat_id}, "text": f"/start {code}"}}


def _press(chat_id: int, data: str, callback_id: str = "cb-1") -> dict:
    return {
        "update_id": 2,
        "callback_query": {
            "id": callback_id,
            "data": data,
            "message": {"message_id": 5, "chat": {"id": chat_id}},
        },
    }


def test_a_forged_webhook_is_refused(client, webhook_on, settings):
    customer = ClientFactory()
    code = telegram_link_code_create(client=customer, by=Actor.system("tests"))

    assert _post(client, _start(77, code), secret=None).status_code == 403
    assert _post(client, _start(77, code), secret="guess").status_code == 403
    settings.TELEGRAM_WEBHOOK_SECRET = ""  # no secret set: the webhook takes nothing
    assert _post(client, _start(77, code), secret="").status_code == 403
    assert Client.objects.get(pk=customer.pk).telegram_chat_id == ""
    settings.TELEGRAM_WEBHOOK_SECRET = SECRET
    assert client.get(WEBHOOK, HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=SECRET).status_code == 405
    bad = client.post(
        WEBHOOK, b"{not json", content_type="application/json", HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=SECRET
    )
    assert bad.status_code == 400


def test_a_chat_is_linked_only_by_a_valid_one_time_code(client, webhook_on):
    customer = ClientFactory()
    code = telegram_link_code_create(client=customer, by=Actor.system("tests"))

    guessed = _post(client, _start(70, "not-the-code")).json()
    linked = _post(client, _start(71, code)).json()
    again = _post(client, _start(72, code)).json()

    assert guessed["method"] == "sendMessage"
    assert "not valid" in guessed["text"]
    assert linked == {"method": "sendMessage", "chat_id": 71, "text": linked["text"]}
    assert "linked" in linked["text"]
    assert "not valid" in again["text"]
    assert Client.objects.get(pk=customer.pk).telegram_chat_id == "71"
    assert AuditEvent.objects.filter(action="client.telegram_linked", subject_id=customer.pk).count() == 1

    expired_code = telegram_link_code_create(client=customer, by=Actor.system("tests"))
    TelegramLinkCode.objects.filter(used_at__isnull=True).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert "not valid" in _post(client, _start(73, expired_code)).json()["text"]
    assert Client.objects.get(pk=customer.pk).telegram_chat_id == "71"


def test_approve_from_the_button_reaches_the_ea_once(client, webhook_on, telegram, redis_client):
    # given: the owner gives a client a code from the console; the client links its chat
    owner_browser = client
    owner_browser.force_login(OwnerFactory())
    customer = ClientFactory()
    page = owner_browser.post(
        "/admin/signals_app/client/",
        {"action": "telegram_link_code", "_selected_action": [customer.pk]},
        follow=True,
    )
    code = next(str(m) for m in page.context["messages"]).split("/start ")[1].split(" ")[0]
    assert "linked" in _post(client, _start(555, code)).json()["text"]
    ea = ea_for(make_device(client=customer))

    # when: a signal is published, its message with buttons is delivered, and the client presses Approve
    signal = make_signal(sl="2645.00", tp="2670.00", ttl_minutes=30)
    outbox_deliver()
    (delivered,) = [call for call in telegram.attempts("555") if call.status == 200]
    buttons = json.loads(delivered.params["reply_markup"])["inline_keyboard"][0]
    approve = next(button for button in buttons if button["text"] == "Approve")
    first = _post(client, _press(555, approve["callback_data"])).json()
    second = _post(client, _press(555, approve["callback_data"], callback_id="cb-2")).json()

    # then: one approval, answered both times, and the EA's poll returns it
    approval = Approval.objects.get(signal=signal, client=customer)
    assert approval.status == ApprovalStatus.APPROVED
    assert approval.decided_by == "client"
    assert first["method"] == "answerCallbackQuery"
    assert first["callback_query_id"] == "cb-1"
    assert first["text"].startswith("Approved: Buy XAUUSD")
    assert second["text"] == first["text"]  # the same press again: the same answer, nothing new
    skip = next(button for button in buttons if button["text"] == "Skip")
    changed_mind = _post(client, _press(555, skip["callback_data"], callback_id="cb-3")).json()
    assert changed_mind["text"] == "This signal was already decided (approved)."
    assert AuditEvent.objects.filter(action="approval.approved", subject_id=approval.pk).count() == 1
    polled = ea.poll().json()
    assert [item["approval_id"] for item in polled["approvals"]] == [approval.pk]


def test_skip_declines_and_a_stranger_or_a_late_press_decides_nothing(client, webhook_on):
    owner_chat = ClientFactory(telegram_chat_id="600")
    ClientFactory(telegram_chat_id="601")
    signal = make_signal(ttl_minutes=30)
    mine = Approval.objects.get(signal=signal, client=owner_chat)

    stranger = _post(client, _press(601, f"approve:{mine.pk}")).json()
    assert stranger["text"] == "This signal is not one of yours."
    assert Approval.objects.get(pk=mine.pk).status == ApprovalStatus.PENDING

    Approval.objects.filter(pk=mine.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    late = _post(client, _press(600, f"approve:{mine.pk}")).json()
    assert late["text"] == "Too late: this signal has expired and can no longer be decided."
    assert Approval.objects.get(pk=mine.pk).status == ApprovalStatus.PENDING

    other = make_signal(ttl_minutes=30)
    skipped = _post(
        client, _press(600, f"skip:{Approval.objects.get(signal=other, client=owner_chat).pk}")
    ).json()
    assert skipped["text"] == "Skipped: Buy XAUUSD."
    assert Approval.objects.get(signal=other, client=owner_chat).status == ApprovalStatus.DECLINED
    assert _post(client, _press(600, "delete:1")).json()["text"] == "Unknown button."
    assert _post(client, {"update_id": 9, "edited_message": {}}).status_code == 200


def test_no_buttons_without_the_webhook(settings):
    settings.TELEGRAM_BOT_TOKEN = "1:t"
    ClientFactory(telegram_chat_id="610")
    make_signal()
    assert OutboxMessage.objects.get(template=OutboxTemplate.APPROVAL_PENDING).reply_markup is None


def test_the_webhook_is_registered_with_its_secret(telegram, webhook_on):
    call_command("telegram_set_webhook", "https://veilstop.example/api/v1/telegram/webhook")

    (registered,) = [call for call in telegram.calls if call.method == "setWebhook"]
    assert registered.params["url"] == "https://veilstop.example/api/v1/telegram/webhook"
    assert registered.params["secret_token"] == SECRET
    assert json.loads(registered.params["allowed_updates"]) == ["message", "callback_query"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=12,
)
_chat = _json | st.fixed_dictionaries({"id": _json | st.integers(-(10**16), 10**16)})
_texts = _json | st.sampled_from(["/start", "/start x", "/start " + "a" * 70, "/start ²"])
_updates = st.fixed_dictionaries(
    {"update_id": _json},
    optional={
        "message": st.fixed_dictionaries({}, optional={"chat": _chat, "text": _texts}),
        "callback_query": st.fixed_dictionaries(
            {},
            optional={
                "id": _json | st.just("cb"),
                "data": _json | st.sampled_from(["approve:1", "skip:²", "approve:99999999999999999999"]),
                "message": st.fixed_dictionaries({}, optional={"chat": _chat}),
            },
        ),
    },
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(update=_json | _updates)
def test_any_update_is_answered_never_an_error(client, webhook_on, update):
    response = _post(client, update)

    assert response.status_code == 200
    if response.content:
        assert response.json()["method"] in ("sendMessage", "answerCallbackQuery")
