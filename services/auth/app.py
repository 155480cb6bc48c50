"""ForwardAuth endpoint: 200 with `X-User-Id` for a valid bearer token from one of our own
entrances (a dashboard, or Traefik's public entry point: their keys), 401 with a reason for a
bad token, 403 for a handshake from neither.

Traefik copies `X-User-Id` onto the proxied request (authResponseHeaders), replacing any
client-sent value, and returns our 401/403 body to the client unchanged.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry import trace

from otel.instrumentation import instrument, telemetry_config
from otel.names import Attr, Entry
from services.auth.settings import AuthSettings
from services.common.provenance import entry_of
from services.common.tokens import TokenError, verify_bearer

USER_ID_HEADER = "X-User-Id"
NOT_OURS = (
    "this entry point takes the dashboard's connections; other clients connect through the "
    "dashboard or Traefik's public entry point"
)


def create_app(settings: AuthSettings) -> FastAPI:
    app = FastAPI(title="omni2-auth", telemetry=telemetry_config())
    secret = settings.jwt_secret.get_secret_value()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/verify", methods=["GET", "HEAD", "POST"])
    async def verify(request: Request) -> Response:
        span = trace.get_current_span()
        authorization = request.headers.get("authorization")
        try:
            identity = verify_bearer(authorization, secret, settings.token_leeway_s)
        except TokenError as err:
            span.set_attributes({Attr.AUTH_RESULT: "denied", Attr.AUTH_FAILURE: str(err)})
            return JSONResponse(
                {"error": "authentication failed", "reason": str(err)},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        entry = entry_of(request.headers, settings)
        if entry == Entry.DIRECT:
            # A handshake that skipped both the dashboard and Traefik's public entry point
            # could choose its own trace flags: the gateway entry point is not for it.
            span.set_attributes({Attr.AUTH_RESULT: "denied", Attr.AUTH_FAILURE: NOT_OURS})
            return JSONResponse({"error": "forbidden", "reason": NOT_OURS}, status_code=403)
        span.set_attributes(
            {Attr.AUTH_RESULT: "allowed", Attr.USER_ID: identity.user_id, Attr.ENTRY: entry}
        )
        return Response(status_code=200, headers={USER_ID_HEADER: identity.user_id})

    instrument(app)
    return app
