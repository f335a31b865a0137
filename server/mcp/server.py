"""The MCP server: the tools and document resources of `tools`, on the SDK's low-level
`Server`, so that schemas come from our pydantic models, the document list is read per
request (documents come and go), and every failure carries our error code.

A tool that fails returns an error result (`is_error`), never a dropped session: its text
and structured content are our one error shape, `{"error": {"code", "message", ...}}`.
A resource that cannot be read is a JSON-RPC error whose `data` carries the same code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    TextContent,
    TextResourceContents,
    Tool,
    ToolAnnotations,
)
from pydantic import ValidationError

from server import __version__
from server.components import Components
from server.errors import AppError
from server.mcp import tools
from server.mcp.tools import TOOLS, Access, ToolSpec

log = logging.getLogger(__name__)
Context = ServerRequestContext[Any, Any]
INSTRUCTIONS = (
    "RodeoAI is a rodeo expert with a curated knowledge base. Ask it rodeo questions with "
    "ask_rodeo_expert (a cited answer); search_knowledge, get_passage and the document "
    "resources give the sources themselves."
)


def _tool(spec: ToolSpec) -> Tool:
    return Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=spec.args.model_json_schema(),
        output_schema=spec.output.model_json_schema(mode="serialization"),
        annotations=ToolAnnotations(
            read_only_hint=spec.read_only,
            destructive_hint=False,
            idempotent_hint=spec.read_only,
            open_world_hint=False,  # only the local knowledge base, never the web
        ),
    )


def error_of(exc: Exception) -> dict[str, Any]:
    """Our error envelope for what a tool raised; a crash says nothing of its cause."""
    if isinstance(exc, ValidationError):
        details = [
            {"field": ".".join(str(p) for p in err["loc"]) or "arguments", "problem": err["msg"]}
            for err in exc.errors()
        ]
        first = details[0]
        body: dict[str, Any] = {
            "code": "validation_error",
            "message": f"{first['field']}: {first['problem']}",
            "details": details,
        }
    elif isinstance(exc, AppError):
        body = {"code": exc.code, "message": exc.message}
        if exc.details is not None:
            body["details"] = exc.details
        if "Retry-After" in exc.headers:
            body["retry_after_s"] = int(exc.headers["Retry-After"])
    else:
        body = {"code": "internal_error", "message": "something went wrong on our side"}
    return {"error": body}


def _failure(exc: Exception) -> CallToolResult:
    envelope = error_of(exc)
    return CallToolResult(
        content=[TextContent(text=json.dumps(envelope))], structured_content=envelope, is_error=True
    )


def build_server(components: Components, access_for: Callable[[Context], Access]) -> Server[Any]:
    """The server, with `access_for` deciding who each request's caller is (the transport
    knows: an HTTP request's principal, or the operator on stdio)."""

    async def list_tools(ctx: Context, params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=[_tool(spec) for spec in TOOLS.values()])

    async def call_tool(ctx: Context, params: CallToolRequestParams) -> CallToolResult:
        spec = TOOLS.get(params.name)
        if spec is None:  # not a tool failure: the protocol's "invalid params"
            raise MCPError(
                INVALID_PARAMS,
                f"unknown tool {params.name!r}",
                {"code": "not_found", "tools": sorted(TOOLS)},
            )
        try:
            args = spec.args.model_validate(params.arguments or {})
            result = await spec.run(components, access_for(ctx), args)
        except (ValidationError, AppError) as exc:
            log.info("MCP tool %s refused: %s", spec.name, error_of(exc)["error"]["code"])
            return _failure(exc)
        except Exception as exc:
            log.exception("MCP tool %s failed", spec.name)
            return _failure(exc)
        data = result.model_dump(mode="json")
        return CallToolResult(content=[TextContent(text=json.dumps(data))], structured_content=data)

    async def list_resources(
        ctx: Context, params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        try:
            rows = await tools.documents(components, access_for(ctx))
        except AppError as exc:
            raise _protocol_error(exc) from exc
        return ListResourcesResult(
            resources=[
                Resource(
                    uri=tools.source_uri(str(row["source"])),
                    name=str(row["source"]),
                    title=str(row["title"]),
                    description=f"{row['kind']} document, {row['chunks']} passages, as ingested",
                    mime_type=tools.DOCUMENT_MIME,
                )
                for row in rows
            ]
        )

    async def list_templates(
        ctx: Context, params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        template = ResourceTemplate(
            uri_template=tools.SOURCE_URI_TEMPLATE,
            name="source",
            title="A knowledge-base document",
            description="One ingested document by its source name, as list_sources gives it.",
            mime_type=tools.DOCUMENT_MIME,
        )
        return ListResourceTemplatesResult(resource_templates=[template])

    async def read_resource(ctx: Context, params: ReadResourceRequestParams) -> ReadResourceResult:
        try:
            text = await tools.read_document(components, access_for(ctx), params.uri)
        except AppError as exc:
            raise _protocol_error(exc, uri=params.uri) from exc
        contents = TextResourceContents(uri=params.uri, text=text, mime_type=tools.DOCUMENT_MIME)
        return ReadResourceResult(contents=[contents])

    return Server(
        "rodeoai",
        version=__version__,
        title="RodeoAI",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


def _protocol_error(exc: AppError, *, uri: str | None = None) -> MCPError:
    """A resource failure as JSON-RPC: "invalid params" for what the caller can fix (an
    unknown document: the spec's code for it), "internal" for the rest; our code in data."""
    data = error_of(exc)["error"]
    if uri is not None:
        data["uri"] = uri
    return MCPError(INVALID_PARAMS if exc.status < 500 else INTERNAL_ERROR, exc.message, data)
