"""Browsers on other origins (SPEC §7): a page on another port of the same host is same-site,
so `SameSite=Strict` still sends it the session cookie. Cookie-authenticated unsafe requests
from anything but the page's origins are refused with 403 on ingest and progress; bearer
tokens and non-browser clients are unaffected; `Secure` follows only a trusted proxy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from imuflow.auth import SESSION_COOKIE
from imuflow.settings import Settings
from tests.e2e.helpers import bearer, make_token
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
CSV = b"time,ax,ay,az\n0,1,2,3\n1,1,2,3\n"
WEB = ("ingest", "progress")


def _csv(name: str) -> dict[str, tuple[str, bytes]]:
    return {"file": (name, CSV + name.encode() + b",0,0,0\n")}


async def _sign_in(client: httpx.AsyncClient, stack: ServiceStack, token: str) -> dict[str, str]:
    response = await client.post(f"{stack.progress_url}/api/session", json={"token": token})
    assert response.status_code == 204, response.text
    return {"Cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE]}"}


async def _upload(client: httpx.AsyncClient, stack: ServiceStack, token: str, name: str) -> str:
    response = await client.post(f"{stack.ingest_url}/api/files", headers=bearer(token), files=_csv(name))
    assert response.status_code == 202, response.text
    file_id: str = response.json()["id"]
    return file_id


async def test_cookie_requests_from_another_origin_are_refused(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=WEB)
    token = await make_token(database_url, "alice")
    host = stack.progress_url.rsplit(":", 1)[0]
    other = {"Origin": f"{host}:1"}  # same host (same site), another port
    page = {"Origin": stack.progress_url}
    async with httpx.AsyncClient(timeout=30) as client:
        jar = await _sign_in(client, stack, token)
        victim = await _upload(client, stack, token, "victim.csv")
        files = f"{stack.progress_url}/api/files/{victim}"

        # Another origin with the cookie: refused on both services, and nothing happened.
        attacks: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", f"{stack.ingest_url}/api/files", {"files": _csv("evil.csv")}),
            ("POST", f"{files}/reparse", {"json": {}}),
            ("POST", f"{files}/cancel", {}),
            ("DELETE", files, {}),
            ("DELETE", f"{stack.progress_url}/api/session", {}),
        ]
        for method, url, body in attacks:
            refused = await client.request(method, url, headers={**jar, **other}, **body)
            assert refused.status_code == 403, (method, url, refused.status_code, refused.text)
            assert "detail" in refused.json()
        still = await client.get(files, headers=jar)
        assert still.status_code == 200 and still.json()["status"] != "cancelled"
        listed = await client.get(f"{stack.progress_url}/api/files", headers=jar)
        assert [r["id"] for r in listed.json()["items"]] == [victim], "the refused upload was stored"
        # `Origin: null` (sandboxed frames, file:// pages) is another origin too.
        null = await client.post(f"{files}/cancel", headers={**jar, "Origin": "null"})
        assert null.status_code == 403

        # Another origin cannot sign the browser in (as the attacker) either.
        forced = await client.post(f"{stack.progress_url}/api/session", headers=other, json={"token": token})
        assert forced.status_code == 403

        # Read-only requests are not refused (CORS decides what a foreign page may read).
        assert (await client.get(files, headers={**jar, **other})).status_code == 200

        # The page's own origin: uploads to ingest (cross-origin, CORS) and commands pass.
        mine = await client.post(
            f"{stack.ingest_url}/api/files", headers={**jar, **page}, files=_csv("p.csv")
        )
        assert mine.status_code == 202, mine.text
        cancelled = await client.post(f"{files}/cancel", headers={**jar, **page})
        assert cancelled.status_code in (200, 409), cancelled.text

        # A bearer token is unaffected by where the request comes from.
        second = await _upload(client, stack, token, "second.csv")
        by_token = await client.delete(
            f"{stack.progress_url}/api/files/{second}", headers={**bearer(token), **other, **jar}
        )
        assert by_token.status_code == 204, by_token.text
        via_ingest = await client.post(
            f"{stack.ingest_url}/api/files", headers={**bearer(token), **other}, files=_csv("t.csv")
        )
        assert via_ingest.status_code == 202, via_ingest.text

        # Same origin (the page on progress calling progress) passes.
        deleted = await client.delete(files, headers={**jar, **page})
        assert deleted.status_code == 204, deleted.text


async def test_sec_fetch_site_decides_without_origin(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=WEB)
    token = await make_token(database_url, "alice")
    async with httpx.AsyncClient(timeout=30) as client:
        jar = await _sign_in(client, stack, token)
        for site in ("same-site", "cross-site"):
            for url in (f"{stack.ingest_url}/api/files",):
                refused = await client.post(url, headers={**jar, "Sec-Fetch-Site": site}, files=_csv(site))
                assert refused.status_code == 403, (site, refused.text)
            victim = await _upload(client, stack, token, f"v-{site}.csv")
            gone = await client.delete(
                f"{stack.progress_url}/api/files/{victim}", headers={**jar, "Sec-Fetch-Site": site}
            )
            assert gone.status_code == 403, (site, gone.text)
        for site in ("same-origin", "none"):
            passed = await client.post(
                f"{stack.ingest_url}/api/files", headers={**jar, "Sec-Fetch-Site": site}, files=_csv(site)
            )
            assert passed.status_code == 202, (site, passed.text)
            deleted = await client.delete(
                f"{stack.progress_url}/api/files/{passed.json()['id']}",
                headers={**jar, "Sec-Fetch-Site": site},
            )
            assert deleted.status_code == 204, (site, deleted.text)
        # Neither header: not a browser (curl, scripts), so the cookie alone is enough.
        plain = await client.post(f"{stack.ingest_url}/api/files", headers=jar, files=_csv("plain.csv"))
        assert plain.status_code == 202, plain.text
        signed_out = await client.delete(f"{stack.progress_url}/api/session", headers=jar)
        assert signed_out.status_code == 204


def _cookie_line(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    return response.headers["set-cookie"].lower()


async def test_secure_cookie_only_behind_a_trusted_proxy(
    service_stack: StartStack, database_url: str, test_settings: Settings
) -> None:
    token = await make_token(database_url, "alice")
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    untrusted = await service_stack(test_settings, services=("progress",))
    async with httpx.AsyncClient(timeout=30) as client:
        plain = _cookie_line(
            await client.post(f"{untrusted.progress_url}/api/session", headers=https, json={"token": token})
        )
        assert "secure" not in plain, "an X-Forwarded-Proto from an untrusted address was believed"
    await untrusted.supervisor.stop()

    trusted = await service_stack(
        test_settings, {"IMUFLOW_TRUSTED_PROXIES": "127.0.0.1/32,::1"}, services=("progress",)
    )
    async with httpx.AsyncClient(timeout=30) as client:
        signed_in = await client.post(
            f"{trusted.progress_url}/api/session", headers=https, json={"token": token}
        )
        behind = _cookie_line(signed_in)
        assert "secure" in behind and "httponly" in behind and "samesite=strict" in behind
        # Signing out clears it with the same attributes (only a secure answer may clear a Secure cookie).
        session = {"Cookie": f"{SESSION_COOKIE}={signed_in.cookies[SESSION_COOKIE]}"}
        cleared = _cookie_line(
            await client.delete(f"{trusted.progress_url}/api/session", headers={**https, **session})
        )
        assert "secure" in cleared and "max-age=0" in cleared
        direct = _cookie_line(await client.post(f"{trusted.progress_url}/api/session", json={"token": token}))
        assert "secure" not in direct, "plain HTTP from the proxy itself must not get a Secure cookie"
