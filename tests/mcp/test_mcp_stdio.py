"""`rodeoai mcp` over stdio, driven by the official MCP client as a desktop app drives it:
the real console script as a subprocess, on a local data folder, with no server running."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from tests import databases
from tests.conftest import KNOWLEDGE
from tests.mcp.checks import QUESTION, error_code, structured, tools_by_name
from tests.servers import BIN, copy_data

pytestmark = [pytest.mark.e2e, pytest.mark.one_pass]


@pytest.fixture(scope="module")
def data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: answers are recorded into it."""
    return copy_data(shared_data, tmp_path_factory.mktemp("mcp-stdio") / "data")


@asynccontextmanager
async def rodeoai_mcp(data: Path) -> AsyncIterator[Client]:
    """The command a desktop client's `mcpServers` entry runs, with only what it sets."""
    env = {
        "RODEOAI_DATA_DIR": str(data),
        "RODEOAI_KNOWLEDGE_DIR": str(KNOWLEDGE),
        "RODEOAI_LOG_LEVEL": "WARNING",
        "RODEOAI_LLM_MAX_TOKENS": "48",  # the bundled model, briefly
        **databases.database_env(data),
    }
    params = StdioServerParameters(command=str(BIN / "rodeoai"), args=["mcp"], env=env)
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=120) as c:
                yield c
        except BaseException:
            errlog.seek(0)
            print(errlog.read()[-3000:])  # the server's stderr, shown with a failure
            raise
        errlog.seek(0)
        logged = errlog.read()
    assert "Traceback" not in logged, logged[-3000:]


def test_stdio_lists_tools_answers_with_citations_and_serves_documents(data: Path) -> None:
    async def scenario() -> None:
        async with rodeoai_mcp(data) as client:
            assert client.server_info is not None and client.server_info.name == "rodeoai"
            tools = await tools_by_name(client)

            found = structured(
                tools["search_knowledge"],
                await client.call_tool("search_knowledge", {"query": "bull riding eight seconds"}),
            )
            assert len(found["passages"]) == 5  # k defaults to 5
            assert any("bull" in p["source"] for p in found["passages"])
            first = found["passages"][0]
            assert first["text"] and first["title"] and first["score"] > 0

            passage = structured(
                tools["get_passage"],
                await client.call_tool("get_passage", {"chunk_id": first["chunk_id"]}),
            )
            assert passage["text"] == first["text"] and passage["source"] == first["source"]

            answer = structured(
                tools["ask_rodeo_expert"],
                await client.call_tool(
                    "ask_rodeo_expert", {"question": QUESTION, "skill_level": "beginner"}
                ),
            )
            assert answer["answer"] and answer["answer_id"] >= 1
            assert answer["skill_level"] == "beginner" and answer["latency_ms"] > 0
            assert answer["citations"] and [c["n"] for c in answer["citations"]] == list(
                range(1, len(answer["citations"]) + 1)
            )
            assert any(c["cited"] for c in answer["citations"])
            assert any(f"[{c['n']}]" in answer["answer"] for c in answer["citations"])

            listed = structured(tools["list_sources"], await client.call_tool("list_sources", {}))
            sources = {s["source"]: s for s in listed["sources"]}
            assert len(sources) >= 30 and "knowledge/bull-riding.md" in sources

            resources = {r.uri: r for r in (await client.list_resources()).resources}
            assert set(resources) == {s["uri"] for s in sources.values()}
            bull = sources["knowledge/bull-riding.md"]
            assert bull["uri"] == "rodeoai://source/knowledge/bull-riding.md"
            resource = resources[bull["uri"]]
            assert resource.title == bull["title"] and resource.mime_type == "text/markdown"
            read = await client.read_resource(bull["uri"])
            text = read.contents[0].text  # type: ignore[union-attr]
            assert read.contents[0].mime_type == "text/markdown"
            assert text.startswith(f"# {bull['title']}\n")
            bull_hits = [p for p in found["passages"] if p["source"] == bull["source"]]
            assert bull_hits and all(p["text"] in text for p in bull_hits)

    asyncio.run(scenario())


def test_stdio_bad_arguments_are_tool_errors_with_our_codes_and_the_session_lives_on(
    data: Path,
) -> None:
    async def scenario() -> None:
        async with rodeoai_mcp(data) as client:
            await tools_by_name(client)
            for k in (0, 51):
                result = await client.call_tool("search_knowledge", {"query": "roping", "k": k})
                assert error_code(result) == "validation_error"
                assert result.structured_content["error"]["message"].startswith("k:")
            missing = await client.call_tool("get_passage", {"chunk_id": 2**62})
            assert error_code(missing) == "not_found"
            huge = await client.call_tool("ask_rodeo_expert", {"question": "why " * 25_000})
            assert error_code(huge) == "question_too_long"
            empty = await client.call_tool("ask_rodeo_expert", {"question": " \u200b "})
            assert error_code(empty) == "empty_question"
            extra = await client.call_tool("list_sources", {"everything": True})
            assert error_code(extra) == "validation_error"
            with pytest.raises(MCPError) as unknown:
                await client.read_resource("rodeoai://source/knowledge/no-such-file.md")
            assert unknown.value.code == INVALID_PARAMS
            assert unknown.value.data["code"] == "not_found"
            # After every refusal the same session still answers.
            again = await client.call_tool("search_knowledge", {"query": "roping", "k": 1})
            assert not again.is_error and len(again.structured_content["passages"]) == 1

    asyncio.run(scenario())
