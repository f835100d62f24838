"""`imuflow token create|list|revoke`, straight against the stack's database."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

from imuflow import auth, db
from imuflow.cli.client import CliError
from imuflow.settings import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one token subcommand."""
    if not settings.database_url:
        raise CliError("no database: run `imuflow up` first or set IMUFLOW_DATABASE_URL")
    return asyncio.run(_run(args, settings.database_url))


async def _run(args: argparse.Namespace, url: str) -> int:
    conn = await db.connect(url)
    try:
        if args.token_command == "create":
            expires = None
            if args.expires_days is not None:
                expires = datetime.now(UTC) + timedelta(days=args.expires_days)
            token = await auth.create_token(
                conn, args.user, admin=args.admin, label=args.label, expires_at=expires
            )
            print(f"token for {args.user}{' (admin)' if args.admin else ''}; it is shown only once:")
            print(token)
        elif args.token_command == "list":
            rows = await conn.fetch(
                "SELECT t.id, u.name, u.is_admin, t.kind, t.label, t.created_at, t.expires_at, "
                "t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id "
                "WHERE t.kind = 'api' ORDER BY t.created_at"
            )
            for r in rows:
                state = "revoked" if r["revoked_at"] else "active"
                print(
                    f"{r['id']}  {r['name']:<16} {'admin' if r['is_admin'] else 'user ':<5} {state:<7} "
                    f"created {r['created_at']:%Y-%m-%d %H:%M} {r['label']}"
                )
        else:
            result = await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE id::text = $1 AND revoked_at IS NULL",
                args.token_id,
            )
            if result != "UPDATE 1":
                raise CliError(f"no active token with id {args.token_id}")
            print(f"revoked {args.token_id}")
    finally:
        await conn.close()
    return 0
