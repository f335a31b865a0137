"""What both MCP test files check the same way: structured output against the tool's
declared output schema (jsonschema, independently of the SDK client's own check), and a
tool error's code in our error shape."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from mcp import Client
from mcp_types import CallToolResult, Tool

TOOL_NAMES = {"search_knowledge", "ask_rodeo_expert", "list_sources", "get_passage"}
QUESTION = "How long must a bull rider stay on for a qualified ride?"


async def tools_by_name(client: Client) -> dict[str, Tool]:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOL_NAMES
    for tool in tools.values():
        assert tool.input_schema["type"] == "object" and tool.output_schema is not None
        assert tool.output_schema["type"] == "object"
        assert tool.description and 20 < len(tool.description) < 400
    return tools


def structured(tool: Tool, result: CallToolResult) -> dict[str, Any]:
    """The call's structured output, valid against the tool's schema and mirrored as text."""
    assert not result.is_error, result.content
    assert tool.output_schema is not None
    jsonschema.validate(result.structured_content, tool.output_schema)
    text = result.content[0]
    assert text.type == "text" and json.loads(text.text) == result.structured_content
    return dict(result.structured_content)


def error_code(result: CallToolResult) -> str:
    """A failed call: an error result (the session lives on) carrying our error shape."""
    assert result.is_error, result.structured_content
    envelope = result.structured_content
    assert envelope == json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert envelope["error"]["message"]
    return str(envelope["error"]["code"])
