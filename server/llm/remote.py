"""Answers never carry remote content. A client that renders Markdown or HTML (Open WebUI on
/v1, a browser) would otherwise fetch an attacker's image the moment it shows an answer that
quoted a poisoned document. So images are dropped, links keep only their text, and HTML tags
go: in the facts given to a model, in evidence lines and extractive answers, and in model
output, streamed or not.
"""

from __future__ import annotations

import re

_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_LINK = re.compile(r"\[([^\]\n]+)\]\((?:[^()\n]|\([^()\n]*\))*\)")
# Without their definitions, reference-style links and images ("[text][ref]") are plain
# text, so only the definitions go; "[1][2]" citations stay as they are.
_REF_DEFINITION = re.compile(r"^[ \t]*\[[^\]\n]+\]:[ \t]*\S+.*$", re.M)
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto|data|javascript):[^<>\s]*)>", re.I)
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>")
# How far the stream filter may hold text back while a construct might still be opening.
_HOLD_LIMIT = 400


def strip_remote(text: str) -> str:
    """The text with Markdown images, link targets and HTML tags removed."""
    text = _HTML_COMMENT.sub("", text)
    text = _IMAGE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _REF_DEFINITION.sub("", text)
    text = _AUTOLINK.sub(r"\1", text)
    return _HTML_TAG.sub("", text)


def _open_at(text: str) -> int | None:
    """Where an image, link or tag that the next tokens could complete begins, if any."""
    start = max(text.rfind("<"), text.rfind("["), text.rfind("!"))
    if start < 0 or len(text) - start > _HOLD_LIMIT:
        return None
    tail = text[start:]
    if tail[0] == "<":
        could_be_tag = len(tail) == 1 or tail[1].isalpha() or tail[1] in "/!"
        return start if could_be_tag and ">" not in tail else None
    if tail[0] == "!":
        return start if tail == "!" else None
    bracket = start - 1 if start > 0 and text[start - 1] == "!" else start
    close = tail.find("]")
    if close < 0:
        return bracket
    after = tail[close + 1 :]
    if after == "":
        return bracket  # "[text]" may yet get "(url)"
    if after[0] in "([":
        return None if (")" in after or "]" in after[1:]) else bracket
    return None


class StreamFilter:
    """`strip_remote` for a token stream: text that might still open an image, link or tag
    is held back until it closes (or cannot), so nothing remote is ever sent."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, token: str) -> str:
        self._pending += token
        cut = _open_at(self._pending)
        ready, self._pending = (
            (self._pending, "") if cut is None else (self._pending[:cut], self._pending[cut:])
        )
        return strip_remote(ready)

    def flush(self) -> str:
        ready, self._pending = self._pending, ""
        return strip_remote(ready)
