"""`imuflow export|delete|reparse ID`: a user's data back, from the terminal."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from imuflow.cli.client import CliError, StackClient
from imuflow.settings import Settings

COMMANDS = frozenset({"export", "delete", "reparse"})


def add_parsers(sub: Any) -> None:
    """Add the export, delete and reparse commands to the CLI's subparsers."""
    export = sub.add_parser("export", help="download a file's samples as CSV or Parquet")
    export.add_argument("id")
    export.add_argument("--as", dest="as_", choices=("csv", "parquet"), default="csv")
    export.add_argument("-o", "--output", type=Path, required=True, help="where to write ('-' = stdout)")
    export.add_argument("--start", help="first time (ns since epoch or ISO-8601)")
    export.add_argument("--end", help="end time, exclusive (ns since epoch or ISO-8601)")
    export.add_argument("--every", type=int, help="keep every n-th sample")
    export.add_argument("--buckets", type=int, help="min/max per bucket (for plotting)")
    delete = sub.add_parser("delete", help="delete a file, its samples and its batch log")
    delete.add_argument("id")
    reparse = sub.add_parser("reparse", help="parse a file again from scratch (a new run)")
    reparse.add_argument("id")
    reparse.add_argument("--format", help="format id ('auto' = detect again)")
    reparse.add_argument("--sensor")
    reparse.add_argument("--timezone")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one of COMMANDS against the stack."""
    client = StackClient(settings, token=args.token)
    if args.command == "delete":
        client.progress("DELETE", f"/api/files/{args.id}")
        print(f"deleted {args.id}", file=sys.stderr)
        return 0
    if args.command == "reparse":
        body = {"format": args.format, "sensor": args.sensor, "timezone": args.timezone}
        record = client.progress("POST", f"/api/files/{args.id}/reparse", json=body)
        print(json.dumps(record, indent=2, default=str))
        return 0
    return _export(client, settings, args)


def _export(client: StackClient, settings: Settings, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"as": args.as_}
    for key in ("start", "end", "every", "buckets"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    url = f"{settings.progress_base}/api/files/{args.id}/samples"
    to_stdout = str(args.output) == "-"
    part = args.output.with_name(args.output.name + ".part")
    written = 0
    try:
        with (
            httpx.Client(headers=client.headers, timeout=httpx.Timeout(30.0, read=300.0)) as http,
            http.stream("GET", url, params=params) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise CliError(f"{response.status_code}: {_detail(response)}")
            out = sys.stdout.buffer if to_stdout else part.open("wb")
            try:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
            finally:
                if not to_stdout:
                    out.close()
    except httpx.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise CliError(f"export interrupted: {exc}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if not to_stdout:
        os.replace(part, args.output)  # never leave a truncated file under the real name
        print(f"wrote {written} bytes to {args.output}", file=sys.stderr)
    return 0


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
