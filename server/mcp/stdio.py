"""The MCP server over stdio, for a desktop client that starts `rodeoai mcp` itself.

It works on the local data directory with no server running. The caller is the operator
at this box, as with `rodeoai ask`: no sign-in and no rate limits, but every answer still
takes the one chat path (guest quota, grounding check, recording, experiments).
stdout is the protocol; the SDK points the process's own fd 1 at stderr meanwhile, so a
stray print or a native library's output cannot corrupt it, and logs go to stderr.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import anyio
from mcp.server.stdio import stdio_server

from server.accounts.service import Principal
from server.components import Components
from server.errors import AppError
from server.mcp.server import build_server

log = logging.getLogger(__name__)
LOCAL = Principal(user=None, guest_key="local", via="local")


@dataclass
class LocalAccess:
    """The operator: waits for the knowledge to load, then may do anything a reader may."""

    components: Components

    def _ready(self) -> Principal:
        self.components.startup.wait(self.components.settings.startup_wait_s)
        return LOCAL

    reader = searcher = asker = _ready


def load(components: Components) -> None:
    """First run's starter knowledge and the index, in the background: the client's
    handshake is answered at once, and calls wait for this (then 503 `starting`)."""
    startup = components.startup
    try:
        startup.step("opening index")
        components.load_starter_knowledge()
        components.index  # noqa: B018  (loads, or rebuilds when missing or corrupt)
        startup.step("warming up")
        components.embedder.encode(["warm up"])  # seconds, paid here, not by the first call
    except Exception as exc:
        log.exception("could not open the knowledge base")
        startup.finish(error=exc.message if isinstance(exc, AppError) else type(exc).__name__)
        return
    startup.finish()


def serve(components: Components) -> None:
    """Serve until the client closes stdin."""
    access = LocalAccess(components)
    server = build_server(components, lambda _ctx: access)
    threading.Thread(target=load, args=(components,), daemon=True).start()

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        components.startup.stop.set()
        components.close()
