"""Post-processing of model output: small local models repeat themselves and invent
citation numbers, so answers are de-duplicated and citations checked before anyone sees them.
"""

from __future__ import annotations

import re

from server.llm.remote import strip_remote

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CITATION = re.compile(r"\[(\d{1,2})\]")
_OTHER_CITE = re.compile(
    r"\((?:source\s*)?\d{1,2}\)(?=\s*[.!?]?\s*$|\s*[.!?,;]\s)|【\s*\d{1,2}\s*】",
    re.I | re.M,
)
_PLACEHOLDER = re.compile(
    r"^[ \t]*\[(?:n|x|\?|#|source)\][ \t]*|[ \t]?\[(?:n|x|\?|#|source)\]", re.I | re.M
)
_ANY_BRACKET_CITE = re.compile(r"\[(?:source\s*)?(\d{1,2})(?:\s*,\s*(\d{1,2}))*\]", re.I)


def _norm(sentence: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", _CITATION.sub("", sentence).lower()).strip()


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def dedupe_sentences(text: str) -> str:
    """Drop sentences (or list lines) already said, keeping the first; keep line breaks."""
    seen: set[str] = set()
    lines_out: list[str] = []
    for line in text.splitlines():
        kept: list[str] = []
        for sentence in re.split(r"(?<=[.!?])\s+", line):
            key = _norm(sentence)
            if key and key in seen:
                continue
            if key:
                seen.add(key)
            kept.append(sentence)
        joined = " ".join(s for s in kept if s.strip())
        if joined.strip() or (lines_out and lines_out[-1].strip()):
            lines_out.append(joined)
    return "\n".join(lines_out).strip()


def trim_runaway(text: str, *, max_repeat: int = 3) -> str:
    """Cut the text where a short phrase starts looping (e.g. "and the rope and the rope")."""
    words = text.split(" ")
    for size in range(1, 9):
        for start in range(0, max(0, len(words) - size * max_repeat)):
            phrase = words[start : start + size]
            repeats = 1
            while words[start + repeats * size : start + (repeats + 1) * size] == phrase:
                repeats += 1
            if repeats >= max_repeat:
                return " ".join(words[: start + size]).rstrip(",;: ") + "."
    return text


def drop_unfinished(text: str) -> str:
    """A reply cut by max_tokens ends mid-sentence: drop that tail if something remains."""
    stripped = text.rstrip()
    if not stripped or stripped[-1] in ".!?)]\"'" or ("\n" not in stripped and "." not in stripped):
        return stripped
    cut = max(stripped.rfind(". "), stripped.rfind(".\n"), stripped.rfind("\n"))
    return stripped[: cut + 1].rstrip() if cut > len(stripped) // 3 else stripped


def normalise_citations(text: str, count: int) -> str:
    """Rewrite [Source 2] and [1, 3] forms as [2] and [1][3]; remove numbers with no source."""

    def fix(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.findall(r"\d{1,2}", match.group(0))]
        return "".join(f"[{n}]" for n in numbers if 1 <= n <= count)

    text = _ANY_BRACKET_CITE.sub(fix, text)
    text = _OTHER_CITE.sub(fix, text)  # "(2)", "【2】" as the model's citation styles
    text = _PLACEHOLDER.sub("", text)  # "[n]" copied from the prompt's instructions
    return re.sub(r"(\[\d{1,2}\])\]+", r"\1", text)  # "[2]]" typos


def cited_numbers(text: str) -> list[int]:
    return sorted({int(n) for n in _CITATION.findall(text)})


_BOILERPLATE = re.compile(
    r"^\s*(?:the\s+)?(?:answer|response)(?:\s+to\s+(?:this|the|your)\s+question)?\s+is\s*:?\s*"
    r"|^\s*(?:the\s+)?facts(?:\s+you\s+are\s+given)?\s*:?\s*$"
    r"|^\s*(?:based on|according to) the facts,?\s*",
    re.I | re.M,
)


def is_substantive(text: str, *, min_words: int = 4) -> bool:
    """False for replies that say nothing: "The answer is: [1]", "The facts:", ..."""
    words = re.findall(r"[A-Za-z0-9$']+", _CITATION.sub(" ", text))
    return len(words) >= min_words


def clean_answer(text: str, *, source_count: int) -> str:
    text = _BOILERPLATE.sub("", strip_remote(text.replace("\r", ""))).strip()
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    text = trim_runaway(text)
    text = dedupe_sentences(text)
    text = drop_unfinished(text)
    return normalise_citations(text, source_count).strip()
