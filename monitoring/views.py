from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitoring.health import run_checks


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when PostgreSQL, Redis and beat are fine; 503 naming what is not."""
    results = run_checks()
    failing = sorted(name for name, problem in results.items() if problem)
    body = {
        "status": "unhealthy" if failing else "ok",
        "checks": {
            name: {"ok": True} if problem is None else {"ok": False, "detail": problem}
            for name, problem in results.items()
        },
        "failing": failing,
    }
    return JsonResponse(body, status=503 if failing else 200)
