"""The route Pushpin recovers a held stream from (the Grip-Link of sse.edge_hold).

When a publish's prev-id shows Pushpin missed an event of a held stream, it asks this
link with `Grip-Last: <channel>; last-id=<n>` and no credential of the client: the link's
signed grant says what the stream is for, and its token must still be live. The answer
is the replay after n and the hold again (services/progress/grip.py). Pushpin also asks
it every grip.LINK_TIMEOUT_SECONDS with nothing missed: that is the held stream's session
check, and a token no longer live gets an answer that ends the stream.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from imuflow import dberrors
from imuflow.settings import Settings
from imuflow.web import database_unavailable
from services.progress import grip
from services.progress.multiplexer import QUERIES, Multiplexer
from services.progress.sse import edge_hold

SESSION_ENDED = b": the session ended (signed out, revoked or expired)\n\n"
router = APIRouter(include_in_schema=False)  # Pushpin's, not a client's


@router.get(grip.RECOVER_PATH)
async def recover(request: Request, grant: Annotated[str, Query(max_length=400)]) -> Response:
    """Pushpin's recovery of a held stream: the replay after the last id it delivered."""
    settings: Settings = request.app.state.settings
    key = settings.sse_edge_key
    found = grip.Grant.decode(grant, key) if grip.signed_by_edge(request, key) else None
    if found is None:
        raise HTTPException(403, "only the SSE edge recovers streams, with the link it was given")
    mux: Multiplexer = request.app.state.mux
    try:
        live = await mux.pool.fetch(QUERIES["live_tokens"], [found.token_hash])
    except dberrors.DRIVER as exc:
        raise database_unavailable(exc) from exc
    if not live:
        # A 200 without a hold or a link ends the held stream at once; an error status
        # would make Pushpin retry the link for about 30 s before it gives up.
        return Response(SESSION_ENDED, media_type="text/event-stream")
    last = grip.last_ids(request).get(found.channel())
    return await edge_hold(request, found, last)
