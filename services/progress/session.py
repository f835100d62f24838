"""`POST /api/session`: exchange a token for the page's HttpOnly session cookie.

EventSource cannot send headers, so the page signs in once and the browser sends the
cookie with every request and stream. The cookie holds a separate session token
(stored hashed like any token, revoked by `DELETE /api/session`), never the long-lived
API token, and it is HttpOnly and SameSite=Strict. It is Secure when the request came over
HTTPS: uvicorn takes the scheme from X-Forwarded-Proto only from IMUFLOW_TRUSTED_PROXIES
(imuflow/runner.py), so nobody else can switch it on or off.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, Response

from contracts.records import ErrorBody, SessionRequest
from imuflow.auth import SESSION_COOKIE, create_token, hash_token, resolve_token
from imuflow.web import Pool

SESSION_DAYS = 7
router = APIRouter(prefix="/api", tags=["session"])


@router.post("/session", status_code=204, responses={401: {"model": ErrorBody}})
async def sign_in(body: SessionRequest, request: Request, pool: Pool) -> Response:
    """Set the session cookie for the token's user."""
    user = await resolve_token(pool, body.token)
    if user is None:
        raise HTTPException(401, "invalid, revoked or expired token")
    expires = datetime.now(UTC) + timedelta(days=SESSION_DAYS)
    session = await create_token(pool, user.name, kind="session", label="web session", expires_at=expires)
    response = Response(status_code=204)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=SESSION_DAYS * 86400,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.delete("/session", status_code=204)
async def sign_out(request: Request, pool: Pool) -> Response:
    """Revoke the session and clear the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await pool.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1 AND kind = 'session'",
            hash_token(token),
        )
    response = Response(status_code=204)
    # The same attributes as when it was set: browsers let only a secure answer clear a Secure cookie.
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response
