"""Error tracking with Sentry (SPEC §7 `IMUFLOW_SENTRY_DSN`; off while it is empty).

Every service calls `init` once at process start, inside its event loop (the asyncio
integration patches the running loop's task factory). What is reported: unhandled
exceptions (FastAPI/Starlette requests, asyncio tasks), every log line at ERROR with its
traceback, and jobs that failed for infrastructure reasons (`capture_job_failure`). Events
carry the tags `service` and, where the log context has one, `file_id`. Tokens never leave:
no request bodies or local variables are sent, and `Authorization`, cookies and any
`token`/`password`/`session` field are replaced before sending.

The SDK is imported by `init` only when a DSN is set (~0.2 s of every service's start).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from imuflow import logs
from imuflow.settings import Settings

FILTERED = "[Filtered]"
# Matched against lower-cased keys anywhere in an event (headers, cookies, extra, contexts).
SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "cookies",
        "set-cookie",
        "x-api-key",
        "token",
        "password",
        "secret",
        "session",
        "smtp_password",
        "admin_token",
        "imuflow_token",
        "imuflow_admin_token",
        "imuflow_smtp_password",
        "dsn",
        "sentry_dsn",
    }
)
# The infrastructure failure reasons (a user's unreadable file, "format", is not an error of ours).
INFRASTRUCTURE = frozenset({"attempts", "stuck", "io", "database", "internal", "dead_letter"})


def init(service: str, settings: Settings) -> bool:
    """Start reporting to IMUFLOW_SENTRY_DSN; False (and nothing done) when it is empty."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.asyncio import AsyncioIntegration
    from sentry_sdk.integrations.fastapi import FastApiIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.starlette import StarletteIntegration

    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        return prepare(event, service)

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        release=f"imuflow@{_version()}",
        integrations=[
            StarletteIntegration(),
            FastApiIntegration(),
            AsyncioIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        send_default_pii=False,
        include_local_variables=False,  # a frame's locals may hold a token
        max_request_body_size="never",
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=lambda crumb, hint: scrub(crumb),
        default_integrations=True,
    )
    sentry_sdk.get_global_scope().set_tag("service", service)
    return True


def capture_job_failure(reason: str, message: str, file_id: str | None = None) -> None:
    """Report a job that ended failed for an infrastructure reason (no-op when off or `format`)."""
    sentry_sdk = sys.modules.get("sentry_sdk")  # never imported: never initialised either
    if reason not in INFRASTRUCTURE or sentry_sdk is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("failure_reason", reason)
        if file_id is not None:
            scope.set_tag("file_id", file_id)
        scope.fingerprint = ["job-failed", reason]
        scope.capture_message(f"job failed ({reason}): {message}", level="error")


def prepare(event: dict[str, Any], service: str) -> dict[str, Any]:
    """Tag an event with its service and file_id, then scrub every secret from it."""
    tags = event.get("tags")
    if isinstance(tags, list):
        tags = dict(tags)
    tags = dict(tags or {})
    tags.setdefault("service", service)
    file_id = _file_id(event)
    if file_id and "file_id" not in tags:
        tags["file_id"] = file_id
    event["tags"] = tags
    scrubbed: dict[str, Any] = scrub(event)
    return scrubbed


def _file_id(event: Mapping[str, Any]) -> str | None:
    """The file the event is about: the log line's fields, else the task's log context."""
    extra = event.get("extra") or {}
    ctx = extra.get("ctx") if isinstance(extra, Mapping) else None
    for source in (ctx, extra, logs.current()):
        if isinstance(source, Mapping) and source.get("file_id"):
            return str(source["file_id"])
    return None


def scrub(value: Any) -> Any:
    """A copy of `value` with every secret-named field (any depth) and bearer value replaced."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key.lower().replace("_", "-") in _NORMALISED:
                out[key] = FILTERED
            else:
                out[key] = scrub(item)
        return out
    if isinstance(value, list | tuple):
        # Headers arrive as [name, value] pairs in some integrations.
        if (
            len(value) == 2
            and isinstance(value[0], str)
            and value[0].lower().replace("_", "-") in _NORMALISED
        ):
            return [value[0], FILTERED]
        return [scrub(v) for v in value]
    if isinstance(value, str) and "bearer " in value.lower():
        return FILTERED
    return value


_NORMALISED = frozenset(k.replace("_", "-") for k in SECRET_KEYS)


def _version() -> str:
    try:
        return metadata.version("imuflow")
    except metadata.PackageNotFoundError:
        return "dev"
