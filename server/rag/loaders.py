"""Turn a file into a title, front-matter metadata and a list of located text sections.

Each loader keeps the location a citation needs: heading path for Markdown and HTML,
page for PDF, start and end times for transcripts, line number for JSONL.
Hidden text (zero-width characters, HTML that is not shown) is dropped here, at the door.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from server.errors import IngestError

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".pdf", ".html", ".htm", ".vtt", ".srt", ".jsonl"}

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u202a-\u202e\u2066-\u2069]")
# A zero-width character between two letters or digits hides a word from a reader while a
# model still reads it; stripping it would turn the hidden text into a plain sentence. Latin
# letters only: ZWNJ and ZWJ between letters are normal spelling in Persian and Indic scripts.
_HIDDEN_WORD = re.compile("[A-Za-z0-9][\u200b-\u200d\u2060\ufeff]+[A-Za-z0-9]")
_SENTENCE_EDGE = re.compile(r"[.!?\n<>]")
# Text files may hold tabs, newlines, form feeds; more other control characters than this
# share means the bytes are not text, whatever their encoding.
_MAX_CONTROL_SHARE = 0.01
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass
class Section:
    """A run of text that shares one location."""

    text: str
    heading: str | None = None
    page: int | None = None
    start: float | None = None
    end: float | None = None
    line: int | None = None


@dataclass
class LoadedFile:
    title: str
    kind: str
    sections: list[Section]
    meta: dict[str, Any] = field(default_factory=dict)


def clean_text(value: str) -> str:
    """Normalise Unicode, drop invisible characters and control codes, tidy whitespace."""
    value = unicodedata.normalize("NFKC", value)
    value = _ZERO_WIDTH.sub("", value)
    value = "".join(ch for ch in value if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    value = re.sub(r"[ \t]+", " ", value)
    return re.sub(r"\n{3,}", "\n\n", value).strip()


def drop_hidden_sentences(text: str) -> tuple[str, list[str]]:
    """Remove each sentence that hides words with zero-width characters; return the text and
    the removed sentences (made readable), so they are flagged and never used as facts."""
    found: list[str] = []
    kept: list[str] = []
    position = 0
    for match in _HIDDEN_WORD.finditer(text):
        if match.start() < position:
            continue  # inside a sentence already dropped
        start = max(
            (m.end() for m in _SENTENCE_EDGE.finditer(text, position, match.start())),
            default=position,
        )
        edge = _SENTENCE_EDGE.search(text, match.end())
        end = (
            edge.end() if edge and edge.group() in ".!?" else (edge.start() if edge else len(text))
        )
        kept.append(text[position:start])
        found.append(_ZERO_WIDTH.sub("", text[start:end]).strip())
        position = end
    kept.append(text[position:])
    return "".join(kept), found


def load_file(path: Path, raw: bytes) -> LoadedFile:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(f"unsupported file type {suffix or '(none)'}", code="unsupported_type")
    if not raw.strip():
        raise IngestError("file is empty", code="empty_file")
    hidden: list[str] = []
    if suffix == ".pdf":
        loaded = _load_pdf(path, raw, hidden)
    else:
        text, hidden = drop_hidden_sentences(_decode(raw))
        if suffix in {".md", ".markdown"}:
            loaded = _load_markdown(path, text, kind="md")
        elif suffix == ".txt":
            loaded = _load_markdown(path, text, kind="txt", headings=False)
        elif suffix in {".html", ".htm"}:
            loaded = _load_html(path, text)
        elif suffix in {".vtt", ".srt"}:
            loaded = _load_transcript(path, text, kind=suffix[1:])
        else:
            loaded = _load_jsonl(path, text)
    for sentence in hidden:
        log.warning(
            "%s: dropped a sentence hidden with zero-width characters: %.120r", path.name, sentence
        )
    if hidden:
        loaded.meta["hidden_sentences"] = len(hidden)
    loaded.sections = [s for s in loaded.sections if s.text.strip()]
    if not loaded.sections:
        raise IngestError("no readable text in file", code="empty_file")
    return loaded


def _decode(raw: bytes) -> str:
    """UTF-8 (or UTF-16 with a BOM), else Windows-1252; refused when it is not text."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = ["utf-16"]
    elif b"\x00" in raw[:4096]:
        raise IngestError("file looks binary, not text", code="unreadable_file")
    else:
        candidates = ["utf-8-sig", "cp1252", "latin-1"]
    for encoding in candidates:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _looks_like_text(text):
            return text
        break  # it decoded, so a wider encoding would only read the same bytes worse
    raise IngestError("file looks binary, not text", code="unreadable_file")


def _looks_like_text(text: str) -> bool:
    sample = text[:65536]
    control = sum(1 for ch in sample if ch not in "\t\n\r\f\v" and unicodedata.category(ch) == "Cc")
    return control <= _MAX_CONTROL_SHARE * max(1, len(sample))


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise IngestError(f"invalid front matter: {exc}", code="bad_front_matter") from exc
    if not isinstance(meta, dict):
        raise IngestError("front matter must be a mapping", code="bad_front_matter")
    return meta, text[match.end() :]


def _load_markdown(path: Path, text: str, *, kind: str, headings: bool = True) -> LoadedFile:
    meta, body = _split_front_matter(text)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []  # open headings as (level, text); level 1 is the title
    title = str(meta.get("title") or "")
    buffer: list[str] = []

    def flush() -> None:
        chunk = clean_text("\n".join(buffer))
        if chunk:
            path_text = " > ".join(h for level, h in stack if level > 1)
            sections.append(Section(text=chunk, heading=path_text or None))
        buffer.clear()

    for line in body.splitlines():
        match = _MD_HEADING.match(line) if headings else None
        if not match:
            buffer.append(line)
            continue
        flush()
        level, heading = len(match.group(1)), clean_text(match.group(2))
        if level == 1 and not title:
            title = heading
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
    flush()
    return LoadedFile(
        title=title or _title_from_name(path), kind=kind, sections=sections, meta=meta
    )


def _load_pdf(path: Path, raw: bytes, hidden: list[str]) -> LoadedFile:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise IngestError("PDF is encrypted", code="unreadable_file")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text, dropped = drop_hidden_sentences(page.extract_text() or "")
            hidden.extend(dropped)
            sections.append(Section(text=clean_text(text), page=number))
        title = str(reader.metadata.title or "") if reader.metadata else ""
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise IngestError(f"unreadable PDF: {exc}", code="unreadable_file") from exc
    return LoadedFile(title=title.strip() or _title_from_name(path), kind="pdf", sections=sections)


def _load_html(path: Path, text: str) -> LoadedFile:
    import trafilatura
    from lxml import html as lxml_html

    try:
        tree = lxml_html.document_fromstring(text)
    except (ValueError, lxml_html.etree.ParserError) as exc:
        raise IngestError(f"unreadable HTML: {exc}", code="unreadable_file") from exc
    _strip_hidden(tree)
    title = clean_text(tree.findtext(".//title") or "")
    visible = lxml_html.tostring(tree, encoding="unicode")
    markdown = trafilatura.extract(
        visible,
        output_format="markdown",
        include_comments=False,
        include_tables=True,
        include_formatting=True,
        favor_recall=True,
    )
    if not markdown:  # very small pages defeat main-text extraction; fall back to all text
        markdown = "\n\n".join(t.strip() for t in tree.itertext() if t.strip())
    loaded = _load_markdown(path, markdown, kind="html")
    loaded.title = title or loaded.title
    return loaded


_NEVER_SHOWN = {"script", "style", "template", "noscript", "iframe", "object", "svg"}


def _strip_hidden(tree: Any) -> None:
    """Remove elements a reader would never see: prompt-injection hides in these."""
    hidden_style = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0", re.I)
    for element in list(tree.iter()):
        if not isinstance(element.tag, str):
            continue
        tag = element.tag.lower()
        style = element.get("style") or ""
        hidden = (
            tag in _NEVER_SHOWN
            or element.get("hidden") is not None
            or element.get("aria-hidden") == "true"
            or bool(hidden_style.search(style))
        )
        if hidden and element.getparent() is not None:
            element.drop_tree()


_CUE_TIME = re.compile(
    r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})\s*-->\s*(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
)


def _seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def _load_transcript(path: Path, text: str, *, kind: str) -> LoadedFile:
    sections: list[Section] = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        for i, line in enumerate(lines):
            match = _CUE_TIME.search(line)
            if match:
                g = match.groups()
                words = " ".join(re.sub(r"<[^>]+>", "", ln) for ln in lines[i + 1 :])
                sections.append(
                    Section(
                        text=clean_text(words),
                        start=_seconds(g[0], g[1], g[2], g[3]),
                        end=_seconds(g[4], g[5], g[6], g[7]),
                    )
                )
                break
    if not sections and text.strip():
        raise IngestError("no timed cues found in transcript", code="unreadable_file")
    return LoadedFile(title=_title_from_name(path), kind=kind, sections=sections)


def _load_jsonl(path: Path, text: str) -> LoadedFile:
    """One record per line: {"text"|"content": ..., "title"?, "heading"?}. Bad lines are skipped."""
    sections: list[Section] = []
    bad: list[int] = []
    title = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if not isinstance(record, dict):
            bad.append(number)
            continue
        body = record.get("text") or record.get("content")
        if not isinstance(body, str):
            bad.append(number)
            continue
        # Optional fields are used only when they are text: a number or a list is ignored.
        named = {
            key: value for key in ("title", "heading") if isinstance(value := record.get(key), str)
        }
        title = title or named.get("title", "")
        heading = clean_text(named.get("heading") or named.get("title") or "") or None
        sections.append(Section(text=clean_text(body), heading=heading, line=number))
    if bad and not sections:
        raise IngestError(f"no valid JSON records (bad lines: {bad[:5]})", code="unreadable_file")
    meta = {"skipped_lines": bad} if bad else {}
    return LoadedFile(
        title=title or _title_from_name(path), kind="jsonl", sections=sections, meta=meta
    )


def _title_from_name(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().title() or path.name
