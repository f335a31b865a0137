"""What each MCP tool and resource does, with its input and output models.

Every one goes through the services the JSON API uses: the hybrid retriever for search and
passages, the ingestor's document list, and `ChatService` (the one chat path) for the
expert, so quotas, the grounding check, recording and experiments apply to MCP answers too.
Who may call what is decided by an `Access`: over HTTP it applies the REST routes' own
rules (server.api.deps); over stdio the caller is the operator at the box itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field

from server.accounts.service import Principal
from server.components import Components
from server.config import SkillLevel
from server.errors import NotFound
from server.schemas import MAX_ID, PassageOut, SearchHit, SourceOut

SOURCE_URI_PREFIX = "rodeoai://source/"
SOURCE_URI_TEMPLATE = SOURCE_URI_PREFIX + "{+name}"
# A document is read back as the knowledge base holds it: its cleaned text under its
# headings, in Markdown, whatever the file was (a PDF's text, a transcript's cues).
DOCUMENT_MIME = "text/markdown"
MAX_QUESTION_FIELD = 100_000  # the JSON API's own cap on a message; the chat limit is lower


class Access(Protocol):
    """Who is calling, checked per call; each method raises as the matching route would."""

    def reader(self) -> Principal:
        """Read the knowledge base (sources, passages, documents)."""
        ...

    def searcher(self) -> Principal:
        """Search: the reader's rule plus the search rate limit."""
        ...

    def asker(self) -> Principal:
        """Ask the expert: the chat rule plus the chat rate limit."""
        ...


# --- inputs ----------------------------------------------------------------------------------
class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class SearchArgs(_Args):
    query: str = Field(max_length=2000, description="What to look for, in plain words.")
    k: int = Field(default=5, ge=1, le=50, description="How many passages to return (1-50).")


class AskArgs(_Args):
    question: str = Field(
        max_length=MAX_QUESTION_FIELD, description="The question, as a rider or coach asks it."
    )
    skill_level: SkillLevel | None = Field(
        default=None,
        description="Depth of the answer; empty: the account's profile, else the default.",
    )


class PassageArgs(_Args):
    chunk_id: int = Field(
        ge=1, le=MAX_ID, description="A passage's chunk_id, from search or a citation."
    )


# --- outputs ---------------------------------------------------------------------------------
class SearchResult(BaseModel):
    passages: list[SearchHit] = Field(description="Best first, by fused rank.")


class ExpertAnswer(BaseModel):
    answer: str = Field(description="The checked answer; [n] cites citations with that n.")
    citations: list[SourceOut] = Field(description="The numbered sources the answer drew on.")
    answer_id: int | None = Field(description="This answer's record, for feedback and review.")
    backend: str = Field(description="Which model backend answered (extractive: quotes).")
    model: str
    latency_ms: int
    skill_level: SkillLevel
    replaced: bool = Field(
        description="True when the model's draft was replaced by quotes from the sources."
    )
    feedback_token: str | None = Field(
        default=None, description="Guests only: send it with feedback on this answer."
    )


class SourceInfo(BaseModel):
    source: str = Field(description="The document's stable name.")
    title: str
    kind: str = Field(description="md, txt, pdf, html, vtt, srt or jsonl")
    chunks: int = Field(description="How many passages it was split into.")
    updated_at: str
    uri: str = Field(description="Read the whole document as this MCP resource.")


class SourceList(BaseModel):
    sources: list[SourceInfo]


# --- the tools -------------------------------------------------------------------------------
async def search_knowledge(
    components: Components, access: Access, args: SearchArgs
) -> SearchResult:
    def work() -> SearchResult:
        access.searcher()
        hits = components.retriever.search(args.query, args.k)
        return SearchResult(passages=[SearchHit.model_validate(h.as_dict()) for h in hits])

    return await asyncio.to_thread(work)


async def ask_rodeo_expert(components: Components, access: Access, args: AskArgs) -> ExpertAnswer:
    principal = await asyncio.to_thread(access.asker)  # may wait for a starting server
    chat = components.chat
    # Not saved as a conversation: an agent asks many one-off questions. Each answer is
    # still recorded (answer_id), billed and measured like any other.
    run = await chat.begin_for(
        principal,
        [{"role": "user", "content": args.question}],
        skill_level=args.skill_level,
        save=False,
        api="mcp",
    )
    answer = await chat.complete(run)
    return ExpertAnswer(
        answer=answer.response,
        citations=[SourceOut.model_validate(s) for s in answer.sources],
        answer_id=answer.answer_id,
        backend=answer.backend,
        model=answer.model,
        latency_ms=answer.latency_ms,
        skill_level=answer.skill_level,  # type: ignore[arg-type]
        replaced=answer.replaced,
        feedback_token=answer.feedback_token,
    )


async def list_sources(components: Components, access: Access, args: NoArgs) -> SourceList:
    def work() -> SourceList:
        access.reader()
        return SourceList(
            sources=[
                SourceInfo.model_validate({**row, "uri": source_uri(str(row["source"]))})
                for row in components.ingestor.documents()
            ]
        )

    return await asyncio.to_thread(work)


async def get_passage(components: Components, access: Access, args: PassageArgs) -> PassageOut:
    def work() -> PassageOut:
        access.reader()
        return PassageOut.of(components.retriever.passage(args.chunk_id))

    return await asyncio.to_thread(work)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str  # when an agent should use it, in a sentence or two
    args: type[BaseModel]
    output: type[BaseModel]
    run: Callable[[Components, Access, Any], Awaitable[BaseModel]]
    read_only: bool = True


TOOLS = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "search_knowledge",
            "Search the rodeo knowledge base",
            "Find passages about rodeo (events, horses, gear, rules, safety, training) in "
            "RodeoAI's curated knowledge base. Use it to gather sources to quote or read; "
            "for a ready answer with citations use ask_rodeo_expert.",
            SearchArgs,
            SearchResult,
            search_knowledge,
        ),
        ToolSpec(
            "ask_rodeo_expert",
            "Ask the rodeo expert",
            "Get a checked, cited answer to a rodeo question from RodeoAI's expert, grounded "
            "in its knowledge base. Each call counts as one question against the account's "
            "daily quota.",
            AskArgs,
            ExpertAnswer,
            ask_rodeo_expert,
            read_only=False,
        ),
        ToolSpec(
            "list_sources",
            "List the knowledge sources",
            "List every document in the knowledge base with its title and resource URI. Use "
            "it to see what RodeoAI knows about, or to pick a document to read whole.",
            NoArgs,
            SourceList,
            list_sources,
        ),
        ToolSpec(
            "get_passage",
            "Read one passage",
            "Get the full text of one passage by its chunk_id, from a search result or a "
            "citation. Use it to check what a citation says.",
            PassageArgs,
            PassageOut,
            get_passage,
        ),
    )
}


# --- resources: the documents ----------------------------------------------------------------
def source_uri(source: str) -> str:
    return SOURCE_URI_PREFIX + quote(source, safe="/")


def source_of(uri: str) -> str:
    if not uri.startswith(SOURCE_URI_PREFIX) or len(uri) == len(SOURCE_URI_PREFIX):
        raise NotFound(f"no resource {uri!r}; documents are {SOURCE_URI_TEMPLATE}")
    return unquote(uri[len(SOURCE_URI_PREFIX) :])


async def documents(components: Components, access: Access) -> list[dict[str, object]]:
    def work() -> list[dict[str, object]]:
        access.reader()
        return components.ingestor.documents()

    return await asyncio.to_thread(work)


async def read_document(components: Components, access: Access, uri: str) -> str:
    """One document as Markdown: its title, then its passages under their locations."""
    source = source_of(uri)

    def work() -> str:
        access.reader()
        hits = components.retriever.document_passages(source)
        parts, last = [f"# {hits[0].title}"], None
        for hit in hits:
            if hit.location and hit.location != last:
                parts.append(f"## {hit.location}")
            last = hit.location
            parts.append(hit.text)
        return "\n\n".join(parts) + "\n"

    return await asyncio.to_thread(work)
