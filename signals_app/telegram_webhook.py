"""Telegram's webhook: updates for the bot arrive here (``setWebhook`` with
``secret_token``: ``manage.py telegram_set_webhook``). A request without the header
``X-Telegram-Bot-Api-Secret-Token`` equal to TELEGRAM_WEBHOOK_SECRET is refused (403),
and every request is refused while no secret is set."""

from __future__ import annotations

import hmac
import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from signals_app.telegram import telegram_update_handle

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header's name


@csrf_exempt  # Telegram's servers carry no CSRF token: the secret header authenticates them
@require_POST
def telegram_webhook(request: HttpRequest) -> HttpResponse:
    secret = settings.TELEGRAM_WEBHOOK_SECRET
    given = request.headers.get(SECRET_HEADER, "")
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        return HttpResponseForbidden("forbidden", content_type="text/plain")
    try:
        update = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return HttpResponse("the body must be a JSON update", status=400, content_type="text/plain")
    reply = telegram_update_handle(update)
    # A method call as the response is how a webhook answers without a request of its own.
    return JsonResponse(reply) if reply is not None else HttpResponse(status=200)


urlpatterns = [path("telegram/webhook", telegram_webhook, name="telegram-webhook")]
