"""HTTP pieces both web services share: auth, health, metrics, error shape, CORS, origins."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from imuflow import db, dberrors
from imuflow.auth import SESSION_COOKIE, User, resolve_token
from imuflow.readiness import Readiness, Report
from imuflow.settings import Settings

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
log = logging.getLogger("imuflow.web")


def database_unavailable(exc: BaseException, headers: dict[str, str] | None = None) -> HTTPException:
    """The 503 of a statement Postgres could not run (raise it `from exc`).

    A server that was away (transient) is the client's to retry. Any other error is ours (a
    dropped view, a value no column takes): it is logged at ERROR, which is what reaches
    Sentry, instead of passing as an outage; the answer stays the same 503.
    """
    transient = exc.transient if isinstance(exc, dberrors.Unavailable) else dberrors.is_transient(exc)
    if not transient:
        log.error("a database statement failed, not transiently: %r", exc, exc_info=exc)
    return HTTPException(503, "the database is unavailable; try again shortly", headers)


def pool_of(request: Request) -> asyncpg.Pool:
    """The app's asyncpg pool (created in lifespan)."""
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def token_of(request: Request) -> str | None:
    """The credential a request carries: its bearer token, else its session cookie."""
    return _token_of(request)


def _token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE)


async def current_user(request: Request) -> User:
    """The caller, from `Authorization: Bearer` or the session cookie; 401 otherwise."""
    return await user_by(request, partial(resolve_token, pool_of(request)))


async def user_by(request: Request, resolve: Callable[[str], Awaitable[User | None]]) -> User:
    """The caller as `resolve` finds the request's credential's user; 401 otherwise."""
    token = _token_of(request)
    if not token:
        raise HTTPException(401, "missing token: send Authorization: Bearer <token>", UNAUTHORIZED)
    user = await resolve(token)
    if user is None:
        raise HTTPException(401, "invalid, revoked or expired token", UNAUTHORIZED)
    return user


async def current_admin(user: Annotated[User, Depends(current_user)]) -> User:
    """The caller, who must be an admin; 403 otherwise."""
    if not user.is_admin:
        raise HTTPException(403, "operator routes need an admin token")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
CurrentAdmin = Annotated[User, Depends(current_admin)]


async def _pool(request: Request) -> asyncpg.Pool:
    # async: FastAPI runs a plain `def` dependency in a worker thread, one hop per request,
    # which a reconnect storm of thousands of streams pays thousands of times.
    return pool_of(request)


async def _settings(request: Request) -> Settings:
    return settings_of(request)


Pool = Annotated[asyncpg.Pool, Depends(_pool)]
AppSettings = Annotated[Settings, Depends(_settings)]


def health_router(ready: Callable[[Request], Awaitable[Report]]) -> APIRouter:
    """`/healthz` (alive), `/readyz` (each dependency `ok` or `down`, 503 when not ready), `/metrics`."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        responses={
            200: {"description": "ready: `postgres`, `broker`, `storage` each `ok` or `down`"},
            503: {"description": "not ready: the same, with the reason in `detail`"},
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        report = await ready(request)
        return JSONResponse(report.body(), status_code=200 if report.ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def readiness_report(request: Request) -> Report:
    """The app's readiness (`app.state.readiness`, refreshed in the background)."""
    readiness: Readiness = request.app.state.readiness
    return readiness.report()


def install_error_shape(app: FastAPI) -> None:
    """Make validation errors `{"detail": "<text>"}` like every other error."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    app.add_exception_handler(RequestValidationError, on_validation)
    _declare_error_shape(app)


def _declare_error_shape(app: FastAPI) -> None:
    """Make the OpenAPI document say what the app really sends on bad input.

    Validation errors are `{"detail": "<text>"}` (not FastAPI's list), and a body that is not
    valid JSON at all is answered 400 by FastAPI before any handler runs.
    """
    build = app.openapi
    error = {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string", "title": "Detail"}},
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = {"title": "HTTPValidationError", **error}
                schemas.pop("ValidationError", None)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if "requestBody" in operation:
                        operation["responses"].setdefault(
                            "400",
                            {
                                "description": "the body could not be parsed",
                                "content": {"application/json": {"schema": error}},
                            },
                        )
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def page_origins(settings: Settings) -> set[str]:
    """Origins the page is served from (every progress URL) plus `IMUFLOW_CORS_ORIGINS`."""
    origins = [o.strip() for o in settings.cors_origins.split(",")]
    origins += [settings.progress_url, *settings.progress_urls.split(",")]
    origins += [f"http://127.0.0.1:{settings.progress_port}", f"http://localhost:{settings.progress_port}"]
    return {o.strip().rstrip("/").lower() for o in origins if o.strip()}


def install_cors(
    app: FastAPI,
    settings: Settings,
    *,
    methods: Sequence[str] = (),
    headers: Sequence[str] = (),
    expose: Sequence[str] = (),
) -> None:
    """Let the page (served by progress) call ingest with its session cookie.

    `methods`, `headers` and `expose` add to the defaults (ingest's tus routes need them).
    """
    app.add_middleware(
        CORSMiddleware,
        allow_origins=sorted(page_origins(settings)),
        allow_credentials=True,
        allow_methods=["GET", "POST", "DELETE", *methods],
        allow_headers=["Authorization", "Content-Type", "Last-Event-ID", *headers],
        expose_headers=list(expose),
    )


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAFE_FETCH_SITES = frozenset({"same-origin", "none"})
SESSION_PATH = "/api/session"


class OriginGuard:
    """Refuse cookie-authenticated unsafe requests that a page of another origin sent (CSRF).

    `SameSite=Strict` keeps the cookie from other *sites* only; a page on another port of the
    same host is same-site and gets it. So an unsafe request (POST, PUT, PATCH, DELETE) that
    would be authenticated by the session cookie (it has the cookie and no bearer token) must
    come from one of the page's origins or from the service's own origin; without `Origin`
    (old browsers), `Sec-Fetch-Site` must say same-origin or none; a request with neither
    header is not from a browser and passes. Signing in and out (`/api/session`) is checked
    even without a cookie, so no other page can sign the browser in as someone else.
    """

    def __init__(self, app: ASGIApp, origins: set[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            problem = self._refusal(scope)
            if problem is not None:
                await JSONResponse({"detail": problem}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        if not (_by_cookie(headers) or scope["path"] == SESSION_PATH):
            return None
        origin = headers.get("origin")
        if origin is not None:
            origin = origin.strip().rstrip("/").lower()
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
            if origin in self.origins or origin == own:
                return None
            return "cross-origin request refused: this origin may not use the session cookie"
        site = headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in SAFE_FETCH_SITES:
            return "cross-site request refused: this page may not use the session cookie"
        return None


def _by_cookie(headers: Headers) -> bool:
    """Whether the request would be authenticated by its session cookie (see `_token_of`)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return False
    return bool(cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE))


class QueryAttribution:
    """Count the Postgres statements an HTTP request causes as `source="request"` (db.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mark = db.QUERY_SOURCE.set("request")
        try:
            await self.app(scope, receive, send)
        finally:
            db.QUERY_SOURCE.reset(mark)


def install_query_attribution(app: FastAPI) -> None:
    """Register `QueryAttribution`, so `imuflow_db_queries` tells requests from background work."""
    app.add_middleware(QueryAttribution)


def install_origin_guard(app: FastAPI, settings: Settings) -> None:
    """Register `OriginGuard` with the page's origins (call before `install_cors`).

    Its 403 is declared on every unsafe operation, so the OpenAPI document says what the
    service can answer.
    """
    app.add_middleware(OriginGuard, origins=page_origins(settings))
    build = app.openapi
    refused = {
        "description": "a cookie-authenticated request from another origin",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }

    def openapi() -> dict[str, Any]:
        schema = build()
        if "ErrorBody" not in schema.get("components", {}).get("schemas", {}):
            return schema
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method.upper() in UNSAFE_METHODS:
                    operation.setdefault("responses", {}).setdefault("403", refused)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
