"""`imuflow`: run the stack or one service, and talk to a running stack."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imuflow.cli import data, ops, trends
from imuflow.cli.client import CliError, StackClient
from imuflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class _Console:
    """rich's Console on stderr, imported when first used: `imuflow upload` sends its first
    bytes before rich is loaded (issue 18: the CLI's imports preceded the upload)."""

    def __init__(self) -> None:
        self._console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def print(self, *objects: Any) -> None:
        self.get().print(*objects)


console = _Console()


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imuflow", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help="the stack's data directory (IMUFLOW_DATA_DIR)")
    parser.add_argument("--token", help="API token (default: IMUFLOW_TOKEN or the stack's)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the whole embedded stack and keep it running")
    up.add_argument(
        "--object-store", action="store_true", help="keep uploads in an embedded S3 store (SeaweedFS)"
    )
    up.add_argument(
        "--progress-replicas",
        type=_positive,
        default=1,
        metavar="N",
        help="run N progress processes on free ports (listed in stack.env as IMUFLOW_PROGRESS_URLS)",
    )
    up.add_argument(
        "--sse-edge",
        action="store_true",
        help="hold event streams in a Pushpin SSE edge (its URL: IMUFLOW_SSE_EDGE_URL in stack.env)",
    )
    sub.add_parser("ingest", help="run the upload service")
    sub.add_parser("parser", help="run one parser worker")
    sub.add_parser("progress", help="run the progress service (page, API, SSE)")
    sub.add_parser("migrate", help="apply database migrations")
    contracts = sub.add_parser("contracts", help="event and API schemas")
    contracts_sub = contracts.add_subparsers(dest="contracts_command", required=True)
    export = contracts_sub.add_parser("export", help="write JSON Schema and AsyncAPI files")
    export.add_argument("directory", type=Path)
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token (and the user if needed)")
    create.add_argument("--user", required=True)
    create.add_argument("--admin", action="store_true")
    create.add_argument("--label", default="")
    create.add_argument("--expires-days", type=float, default=None)
    token_sub.add_parser("list", help="list tokens (never their secrets)")
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    upload = sub.add_parser("upload", help="upload a file and watch it being parsed")
    upload.add_argument("file", type=Path)
    upload.add_argument("--format")
    upload.add_argument("--sensor")
    upload.add_argument("--timezone")
    upload.add_argument("--allow-duplicate", action="store_true")
    upload.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True)
    upload.add_argument(
        "--limit-rate", type=_rate, default=0.0, metavar="RATE", help="at most RATE bytes/s (e.g. 500k, 2M)"
    )
    upload.add_argument(
        "--chunk-size", type=_rate, default=8e6, metavar="SIZE", help="bytes per request (default 8M)"
    )
    ops.add_parsers(sub)
    trends.add_parsers(sub)
    data.add_parsers(sub)
    for name, text in (
        ("show", "show a file"),
        ("cancel", "cancel a job"),
        ("retry", "resume a failed or cancelled job"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("id")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = _parser().parse_args(argv)
    settings = load_settings(args.data_dir)
    try:
        code = _dispatch(args, settings)
    except CliError as exc:
        console.print(f"[red]error:[/red] {exc}")
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "up":
        from imuflow.stack.up import run_up

        return run_up(
            settings,
            object_store=args.object_store,
            progress_replicas=args.progress_replicas,
            sse_edge=args.sse_edge,
        )
    if command in ("ingest", "parser", "progress"):
        _run_service(command, settings)
        return 0
    if command == "migrate":
        return _migrate(settings)
    if command == "contracts":
        from imuflow.cli.contracts import export_contracts

        for path in export_contracts(args.directory, settings):
            print(path)
        return 0
    if command == "token":
        from imuflow.cli import tokens

        return tokens.run(args, settings)
    if command in trends.COMMANDS:
        return trends.run(args, settings)
    if command in ops.COMMANDS:
        return ops.run(args, settings)
    if command in data.COMMANDS:
        return data.run(args, settings)
    client = StackClient(settings, token=args.token)
    if command == "upload":
        return _upload(client, args)
    if command == "show":
        _print(client.progress("GET", f"/api/files/{args.id}"))
        return 0
    if command in ("cancel", "retry"):
        _print(client.progress("POST", f"/api/files/{args.id}/{command}"))
        return 0
    raise CliError(f"unknown command {command}")


def _run_service(name: str, settings: Settings) -> None:
    if name == "ingest":
        from services.ingest.main import main as service_main
    elif name == "parser":
        from services.parser.main import main as service_main
    else:
        from services.progress.main import main as service_main
    service_main(settings)


def _migrate(settings: Settings) -> int:
    import asyncio

    from imuflow import db

    settings.require_servers() if not settings.database_url else None
    applied = asyncio.run(db.migrate(settings.database_url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _upload(client: StackClient, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise CliError(f"no such file: {args.file}")
    fields = {
        k: v for k, v in (("format", args.format), ("sensor", args.sensor), ("timezone", args.timezone)) if v
    }
    if args.allow_duplicate:
        fields["allow_duplicate"] = "true"
    record = _send(client, args.file, fields, args.limit_rate, int(args.chunk_size))
    console.print(f"uploaded [bold]{record['filename']}[/bold] as {record['id']}")
    print(record["id"])
    if not args.watch:
        return 0
    from imuflow.cli.watch import describe, watch

    final = watch(client, record["id"], console.get())
    status_text = final["status"]
    if status_text == "completed":
        console.print(f"[green]completed[/green]: {describe(final)}")
        return 0
    console.print(f"[red]{status_text}[/red]: {final.get('error_message') or ''}")
    return 1


def _send(
    client: StackClient, path: Path, fields: dict[str, str], limit_rate: float, chunk: int
) -> dict[str, Any]:
    """Upload with tus (resuming by itself, and where a killed run stopped); the file record."""
    from imuflow.cli.resumable import ResumableUpload

    upload = ResumableUpload(client, path, fields, chunk=max(chunk, 1024), limit_rate=limit_rate)
    bar = _UploadBar(upload.size)
    try:
        outcome = upload.run(bar.update)
    finally:
        bar.close()
    if outcome.resumed_from:
        console.print(f"resumed from byte {outcome.resumed_from:,} of {upload.size:,}")
    record: dict[str, Any] = client.progress("GET", f"/api/files/{outcome.file_id}")
    return record


class _UploadBar:
    """The upload's progress bar, drawn from the first chunk sent: the upload is created
    and its first bytes are on their way before rich's progress module is imported."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = 0
        self.bar: Progress | None = None
        self.task: Any = None

    def update(self, sent: int) -> None:
        self.calls += 1
        if self.bar is None:
            if self.calls == 1:  # the upload's start (nothing sent by this run yet)
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            columns = (
                TextColumn("{task.description:>9}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            self.bar = Progress(*columns, console=console.get())
            self.bar.start()
            self.task = self.bar.add_task("uploading", total=self.size)
        self.bar.update(self.task, completed=sent)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _rate(text: str) -> float:
    units = {"k": 1e3, "m": 1e6, "g": 1e9}
    raw = text.strip().lower()
    try:
        return float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (bytes/s, e.g. 500k or 2M)") from exc


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


if __name__ == "__main__":
    main()
