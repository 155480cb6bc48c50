"""The team's ForwardAuth: verifies the bearer token, answers X-User-Id (not instrumented)."""

from __future__ import annotations

import os

import jwt
from fastapi import FastAPI, Request, Response

app = FastAPI()
SECRET = os.environ["OMNI_JWT_SECRET"]


@app.get("/verify")
async def verify(request: Request) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="omni2")
    except jwt.InvalidTokenError:
        return Response('{"reason": "invalid token"}', status_code=401)
    if scheme.lower() != "bearer":
        return Response('{"reason": "bearer token expected"}', status_code=401)
    return Response(status_code=200, headers={"X-User-Id": str(claims["sub"])})
