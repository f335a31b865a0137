"""Split located sections into overlapping chunks sized in embedder tokens.

Chunks never cross a heading, page or JSONL record, so each keeps one citation location.
Transcript cues share no such boundary and are packed together, keeping the time span.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby

from server.rag.loaders import Section

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9*-])")
# WordPiece reads a longer "word" as one [UNK], so token counts would not bound its size.
MAX_WORD_CHARS = 100  # all-MiniLM-L6-v2's max_input_chars_per_word


@dataclass
class Unit:
    text: str
    tokens: int
    start: float | None = None
    end: float | None = None


@dataclass
class ChunkDraft:
    text: str
    token_count: int
    heading: str | None
    location: str | None

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(f"{self.heading}\n{self.text}".encode()).hexdigest()


def format_time(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _location(section: Section, start: float | None, end: float | None) -> str | None:
    parts: list[str] = []
    if section.heading:
        parts.append(section.heading)
    if section.page is not None:
        parts.append(f"page {section.page}")
    if start is not None:
        parts.append(f"{format_time(start)}-{format_time(end if end is not None else start)}")
    if section.line is not None:
        parts.append(f"line {section.line}")
    return ", ".join(parts) or None


def _words(sentence: str) -> Iterable[str]:
    for word in sentence.split():
        for start in range(0, len(word), MAX_WORD_CHARS):
            yield word[start : start + MAX_WORD_CHARS]


def _split_long(text: str, limit: int, count: Callable[[str], int]) -> Iterable[str]:
    """Sentences first; a sentence still over the limit is cut into word windows. Words are
    counted one by one (the tokenizer splits on spaces first), so a long sentence costs
    linear time, and an over-long word is cut into pieces first."""
    for sentence in _SENTENCE_END.split(text):
        if count(sentence) <= limit and not any(len(w) > MAX_WORD_CHARS for w in sentence.split()):
            yield sentence
            continue
        window: list[str] = []
        tokens = 0
        for word in _words(sentence):
            cost = count(word)
            if window and tokens + cost > limit:
                yield " ".join(window)
                window, tokens = [], 0
            window.append(word)
            tokens += cost
        if window:
            yield " ".join(window)


def _units(sections: list[Section], limit: int, count: Callable[[str], int]) -> list[Unit]:
    units: list[Unit] = []
    for section in sections:
        for paragraph in re.split(r"\n\s*\n", section.text):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            tokens = count(paragraph)
            if tokens <= limit and max(map(len, paragraph.split()), default=0) <= MAX_WORD_CHARS:
                units.append(Unit(paragraph, tokens, section.start, section.end))
                continue
            for piece in _split_long(paragraph, limit, count):
                units.append(Unit(piece, count(piece), section.start, section.end))
    return units


def chunk_sections(
    sections: list[Section],
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap: int,
) -> list[ChunkDraft]:
    drafts: list[ChunkDraft] = []

    def boundary(section: Section) -> tuple[str | None, int | None, int | None]:
        return section.heading, section.page, section.line

    for _, group_iter in groupby(sections, key=boundary):
        group = list(group_iter)
        current: list[Unit] = []
        for unit in _units(group, max_tokens, count_tokens):
            if current and sum(u.tokens for u in current) + unit.tokens > max_tokens:
                drafts.append(_draft(group[0], current))
                carry: list[Unit] = []  # overlap: trailing units that fit the overlap budget
                for previous in reversed(current):
                    if sum(u.tokens for u in carry) + previous.tokens > overlap:
                        break
                    carry.insert(0, previous)
                current = carry
            current.append(unit)
        if current:
            drafts.append(_draft(group[0], current))
    return drafts


def _draft(section: Section, units: list[Unit]) -> ChunkDraft:
    starts = [u.start for u in units if u.start is not None]
    ends = [u.end for u in units if u.end is not None]
    return ChunkDraft(
        text="\n\n".join(u.text for u in units),
        token_count=sum(u.tokens for u in units),
        heading=section.heading,
        location=_location(section, min(starts, default=None), max(ends, default=None)),
    )
