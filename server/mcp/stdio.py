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


def serve(components: Components) -> None:
    """Serve until the client closes stdin."""
    access = LocalAccess(components)
    server = build_server(components, lambda _ctx: access)
    # The handshake is answered at once; calls wait for the knowledge (then `starting`).
    threading.Thread(target=components.start, daemon=True).start()

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    try:
        anyio.run(main)
    finally:
        components.startup.stop.set()
        components.close()
