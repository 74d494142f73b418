"""One error type for domain rules, one response shape for every API error.

Every 4xx from the API is ``{"error": {"code": ..., "message": ..., "fields": {...}}}``
with a stable ``code``; clients branch on the code, people read the message.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

logger = logging.getLogger(__name__)

# A store that failed mid-request (PostgreSQL restarted, a connection killed, Redis
# down): the client is told to retry, never given a 500.
UNAVAILABLE = (OperationalError, InterfaceError, RedisError)
RETRY_AFTER_SECONDS = 2


class DomainError(Exception):
    """A request that breaks a domain rule. Raised by services, shown by the API."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        fields: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status_code = status_code
        self.fields = fields or {}

    @classmethod
    def not_found(cls) -> DomainError:
        return cls("not_found", "Not found.", status_code=status.HTTP_404_NOT_FOUND)

    @classmethod
    def conflict(cls, message: str) -> DomainError:
        return cls("conflict", message, status_code=status.HTTP_409_CONFLICT)


_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.ValidationError: "invalid",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def _body(code: str, message: str, fields: dict | None = None) -> dict:
    error: dict = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, UNAVAILABLE):
        logger.warning("API answered 503: %s: %s", type(exc).__name__, str(exc).strip().splitlines()[:1])
        set_rollback()
        return Response(
            _body("unavailable", "The service is briefly unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DomainError):
        return Response(_body(exc.code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            _body("request_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(_body("malformed_request", "The request is malformed."), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        response.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    code = next((code for kind, code in _CODES.items() if isinstance(exc, kind)), exc.default_code)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = _body(code, "The request is invalid; see fields.", detail)
    else:
        response.data = _body(code, str(exc.detail))
    return response
