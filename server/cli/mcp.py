"""`rodeoai mcp`: the knowledge base and the expert for a desktop MCP client, over stdio."""

from __future__ import annotations

import os

from server.cli.common import components as _components


def run() -> None:
    """Serve MCP over stdio on the local data directory (no server needed). A desktop
    client (Claude Desktop, VS Code, Cursor) starts this itself; logs go to stderr."""
    # As `serve` does: torch's OpenMP pool would slow llama.cpp's threads in this process.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from server.mcp.stdio import serve

    serve(_components(quiet=True))
