"""GET /metrics: the Prometheus text exposition of this worker's numbers (server/http/metrics.py).

Open by default, for a scraper on the LAN; with RODEOAI_METRICS_TOKEN set, the scraper
sends `Authorization: Bearer <token>`. Not in the OpenAPI schema: it is for Prometheus,
not API clients."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from server.accounts.security import Unauthorized
from server.api.deps import ComponentsDep
from server.http.metrics import CONTENT_TYPE, METRICS_PATH, Metrics

router = APIRouter()


@router.get(METRICS_PATH, include_in_schema=False)
def metrics(request: Request, components: ComponentsDep) -> Response:
    token = components.settings.metrics_token
    if token is not None and token.get_secret_value():  # empty is unset, as in .env
        offered = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(offered.encode(), expected.encode()):
            raise Unauthorized("a valid metrics token is required")
    registry: Metrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE)
