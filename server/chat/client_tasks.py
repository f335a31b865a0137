"""A chat front end's background tasks, told apart from questions and answered cheaply.

Open WebUI, LibreChat and others send their own housekeeping through the chat model: a
title for the chat, tags, follow-up suggestions, search queries. Answered as rodeo
questions, each cost the user a question, waited for the LLM slot, was recorded as an
answer, and came back as a cited answer where the client wanted JSON. Here a task is
recognised from the request itself and answered without the LLM, the grounding check, the
quota or an answer record: titles from the conversation's first question, tags from the
topics of the documents that answer it, follow-ups from nearby passages, each in the exact
shape the client's prompt asks for.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from server.rag.retriever import Hit

log = logging.getLogger(__name__)

TASK_MODEL = "rodeoai-tasks"  # the model a client names as its task model

TaskKind = Literal[
    "title", "tags", "follow_ups", "queries", "autocomplete", "image_prompt", "emoji", "summary"
]
Search = Callable[[str, int], list[Hit]]  # the knowledge base: query, k -> best passages

# --- recognition ---------------------------------------------------------------------------
# Open WebUI: every task prompt opens with "### Task:" and embeds the chat between
# <chat_history> tags; the JSON it wants is spelled out in the prompt ({ "title": ... }).
_OWUI_HEADER = re.compile(r"\A\s*###\s*Task:", re.I)
_HISTORY = re.compile(r"<chat_history>(.*?)</chat_history>", re.S | re.I)
_JSON_KEY = re.compile(r'\{\s*"(title|tags|follow_ups|queries|text|prompt)"\s*:')
_KINDS: dict[str, TaskKind] = {
    "title": "title",
    "tags": "tags",
    "follow_ups": "follow_ups",
    "queries": "queries",
    "text": "autocomplete",
    "prompt": "image_prompt",
}
_OWUI_ROLE = re.compile(r"^(USER|ASSISTANT|SYSTEM):[ \t]?", re.M)
_EMOJI = re.compile(r"\bemoji\b.*?Message:\s*```(.*)```", re.S | re.I)
_AUTOCOMPLETE_TEXT = re.compile(r"<text>(.*?)</text>", re.S | re.I)
# Others (LibreChat's titleConvo, generic clients): an instruction about the conversation
# plus the conversation itself, as role-labelled lines. A question that merely says
# "title" or "task" has neither.
_ABOUT_CONVERSATION = re.compile(
    r"\b(title|summary|summari[sz]e)\b[^\n]{0,80}\b(conversation|chat history|dialogue)\b", re.I
)
# LibreChat's "structured" title method asks for the language and a title, and parses the
# reply as the JSON object {"language", "title"}.
_LANGUAGE_AND_TITLE = re.compile(
    r"analy[sz]e this conversation.{0,120}\blanguage\b.{0,200}\btitle\b", re.I | re.S
)
_TRANSCRIPT_ROLE = re.compile(r"^[ \t]*(?:\|\|>)?(User|Human|AI|Assistant|Response):[ \t]*", re.M)


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    client: str  # open-webui, librechat or generic
    questions: tuple[str, ...]  # the user's turns in the embedded conversation, in order
    as_json: bool  # Open WebUI parses a JSON object; the others take plain text
    conversation: str = ""  # the embedded conversation, whole
    text: str = ""  # what an autocomplete continues, or the message an emoji reflects
    # Fields the client's JSON reply needs besides the task's own (LibreChat's structured
    # title asks for the language too).
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def first_question(self) -> str:
        return self.questions[0] if self.questions else ""

    @property
    def last_question(self) -> str:
        return self.questions[-1] if self.questions else ""


def recognise(messages: list[dict[str, str]]) -> Task | None:
    """The client task these messages carry, or None for a question."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        return None
    last = users[-1]
    if _OWUI_HEADER.match(last) or _EMOJI.search(last):
        task = _open_webui(last)
        if task is not None:
            return task
    instructions = "\n".join(m["content"] for m in messages if m["role"] in {"system", "user"})
    if _LANGUAGE_AND_TITLE.search(instructions) and _TRANSCRIPT_ROLE.search(instructions):
        questions = _transcript_questions(instructions)
        extra = (("language", "English"),)
        return Task("title", "librechat", questions, True, instructions, extra=extra)
    found = _ABOUT_CONVERSATION.search(instructions)
    if found and _TRANSCRIPT_ROLE.search(instructions):
        kind: TaskKind = "title" if found.group(1).lower() == "title" else "summary"
        client = "librechat" if "5-word-or-less title" in instructions else "generic"
        return Task(kind, client, _transcript_questions(instructions), False, instructions)
    return None


def _open_webui(prompt: str) -> Task | None:
    history = _HISTORY.search(prompt)
    if history is None:
        emoji = _EMOJI.search(prompt)
        if emoji is None:
            return None
        return Task("emoji", "open-webui", (), False, text=emoji.group(1).strip())
    conversation = history.group(1)
    turns = _OWUI_ROLE.split(conversation)[1:]  # role, text, role, text, ...
    questions = tuple(
        _plain(text) for role, text in zip(turns[::2], turns[1::2], strict=True) if role == "USER"
    )
    instructions = _HISTORY.sub(" ", prompt)  # a chat that quotes JSON must not decide
    key = _JSON_KEY.search(instructions)
    kind = _KINDS[key.group(1)] if key else "summary"
    typed = _AUTOCOMPLETE_TEXT.findall(instructions)  # the last one: the examples come first
    text = typed[-1].strip() if typed and kind == "autocomplete" else ""
    return Task(kind, "open-webui", questions, key is not None, conversation, text)


def _transcript_questions(text: str) -> tuple[str, ...]:
    parts = _TRANSCRIPT_ROLE.split(text)[1:]
    return tuple(
        _plain(body).strip('"')
        for role, body in zip(parts[::2], parts[1::2], strict=True)
        if role in {"User", "Human"} and _plain(body).strip('"')
    )


def _plain(text: str) -> str:
    return " ".join(text.split())


# --- answers -------------------------------------------------------------------------------
def answer(task: Task, search: Search) -> str:
    """The reply text, in the shape the task's prompt asked for. Never raises for a bad
    or empty knowledge base: a task is housekeeping, and a plain default beats an error."""
    if task.kind == "title":
        return _shape(task, "title", title_of(task.first_question))
    if task.kind == "summary":
        return _shape(task, "title", title_of(task.first_question))
    if task.kind == "tags":
        return _shape(task, "tags", tags_for(" ".join(task.questions[:3]), search))
    if task.kind == "follow_ups":
        return _shape(task, "follow_ups", follow_ups_for(task, search))
    if task.kind == "queries":
        return _shape(task, "queries", [task.last_question] if task.last_question else [])
    if task.kind == "image_prompt":
        subject = title_of(task.first_question).lower()
        return _shape(task, "prompt", f"An illustration of {subject} at a rodeo arena.")
    if task.kind == "autocomplete":
        return _shape(task, "text", "")  # the template's own "unsure" answer
    return "\N{FACE WITH COWBOY HAT}"  # emoji: Open WebUI's voice mode wants one character


def _shape(task: Task, key: str, value: object) -> str:
    if task.as_json:
        return json.dumps({**dict(task.extra), key: value}, ensure_ascii=False)
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


_QUESTION_WORDS = frozenset(
    (
        "what what's whats how how's why when where who who's whom whose which is are was "
        "were be been am do does did can could should would will shall must may might "
        "tell explain describe give show list please hey hi hello ok okay so i i'm me my "
        "mine we us our you your it its it's this that these those there here a an the "
        "some any about really just also kind sort"
    ).split()
)
_HOW_MEASURE = frozenset("long many much often far fast old big high heavy soon".split())
_JOINERS = frozenset("in of for on at to with and or vs from by into after before per".split())
_WORD = re.compile(r"[A-Za-z0-9][\w'\u2019-]*")
MAX_TITLE_WORDS = 6


def title_of(question: str) -> str:
    """A short title in plain words from a question: its content words, in order, without
    the question words ("What are the penalties in barrel racing?" -> "Penalties in barrel
    racing")."""
    first = re.split(r"(?<=[?.!])\s", question.strip(), maxsplit=1)[0]
    words = _WORD.findall(first)
    kept: list[str] = []
    for i, word in enumerate(words):
        low = word.lower().replace("\u2019", "'")
        if low in _HOW_MEASURE and i > 0 and words[i - 1].lower() == "how":
            continue  # "how long must a goat tie hold" is about the goat tie, not "long"
        if low in _QUESTION_WORDS:
            continue
        if low in _JOINERS and (not kept or kept[-1].lower() in _JOINERS):
            continue
        kept.append(word)
    kept = _first_content_words(kept, MAX_TITLE_WORDS)
    while kept and kept[-1].lower() in _JOINERS:
        kept.pop()
    if not kept:
        return "Rodeo question"
    return " ".join([kept[0][0].upper() + kept[0][1:], *kept[1:]])


def _first_content_words(words: list[str], limit: int) -> list[str]:
    """Up to `limit` content words; the small joiners between them come free, so "Penalty
    for heeler catching one hind leg" keeps its last word."""
    kept: list[str] = []
    content = 0
    for word in words:
        if word.lower() not in _JOINERS:
            if content == limit:
                break
            content += 1
        kept.append(word)
    return kept


_GENERIC_TITLE_WORDS = re.compile(r"\s+(Fundamentals|Overview|Basics|Guide)$", re.I)


def tags_for(query: str, search: Search) -> list[str]:
    """A broad tag, then the topics (document titles) of the passages that answer it."""
    tags = ["Rodeo"]
    for hit in _safe_search(search, query, 6):
        topic = _GENERIC_TITLE_WORDS.sub("", hit.title).strip()
        if topic and topic.lower() not in {t.lower() for t in tags}:
            tags.append(topic)
        if len(tags) == 4:
            break
    return tags if len(tags) > 1 else ["General"]


def follow_ups_for(task: Task, search: Search, count: int = 3) -> list[str]:
    """Questions the knowledge base can answer next: the headings of passages near the
    latest question, skipping what the conversation already covered."""
    seen = task.conversation.lower() + " " + " ".join(task.questions).lower()
    found: list[str] = []
    for hit in _safe_search(search, task.last_question, 10)[1:]:  # the best one was the answer
        heading = (hit.heading or "").strip()
        if not heading or heading.lower() in seen:
            continue
        question = as_question(heading)
        if question not in found:
            found.append(question)
        if len(found) == count:
            break
    return found


def as_question(heading: str) -> str:
    """A heading as a question a user would type ("What Barrel Racing Is" -> "What is
    barrel racing?")."""
    phrase = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in heading.split())
    phrase = phrase.rstrip(" ?.:")
    if m := re.fullmatch(r"what (.+) (is|are)", phrase):
        return f"What {m.group(2)} {m.group(1)}?"
    if m := re.fullmatch(r"how to (.+)", phrase):
        return f"How do I {m.group(1)}?"
    if re.match(r"(how|why|when|where|what|which|who|is|are|can|should|do|does) ", phrase):
        return phrase[0].upper() + phrase[1:] + "?"
    if phrase.startswith(("the ", "a ", "an ")) and " and " not in phrase:
        return f"What is {phrase}?"
    return f"Can you explain {phrase}?"


def _safe_search(search: Search, query: str, k: int) -> list[Hit]:
    if not query.strip():
        return []
    try:
        return search(query, k)
    except Exception:  # no index yet, or the embedder failed: the task still gets a reply
        log.warning("a client task's search failed; answering without it", exc_info=True)
        return []
