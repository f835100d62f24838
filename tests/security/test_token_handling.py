"""Tokens never travel in URLs: not from the page, not from the CLI (they would end up in
browser history, proxy logs and Referer headers)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "services" / "progress" / "static"
CLI = ROOT / "imuflow" / "cli"
# `?token=`, `&access_token=`, `searchParams.set("token", ...)`, an f-string URL with a token.
TOKEN_IN_URL = re.compile(
    r"""[?&](?:access_)?token=|searchParams\.(?:set|append)\(\s*["'](?:access_)?token|params=\{[^}]*["']token""",
    re.IGNORECASE,
)


class _Forms(HTMLParser):
    """Collects each form's method and whether it holds a password field."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str | bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"method": values.get("method", "get").lower(), "password": False})
        elif tag == "input" and values.get("type") == "password" and self.forms:
            self.forms[-1]["password"] = True


def test_sign_in_forms_never_submit_the_token_in_the_url() -> None:
    # Without JavaScript (slow network, a script error) a GET form would put the token
    # in the address bar; method=post keeps it in a body even then.
    pages = sorted(STATIC.glob("*.html"))
    assert pages
    checked = 0
    for page in pages:
        parser = _Forms()
        parser.feed(page.read_text())
        for form in parser.forms:
            if form["password"]:
                checked += 1
                assert form["method"] == "post", f"{page.name}: a sign-in form must use method=post"
    assert checked, "no sign-in form with a password field found"


def test_page_scripts_and_cli_never_put_tokens_in_urls() -> None:
    sources = [*STATIC.rglob("*.js"), *STATIC.glob("*.html"), *CLI.glob("*.py")]
    assert sources
    for source in sources:
        for number, line in enumerate(source.read_text().splitlines(), 1):
            assert not TOKEN_IN_URL.search(line), f"{source.relative_to(ROOT)}:{number}: token in a URL"


def test_cli_sends_the_token_as_a_bearer_header() -> None:
    client = (CLI / "client.py").read_text()
    assert '"Authorization": f"Bearer {' in client
