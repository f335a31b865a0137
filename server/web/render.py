"""Answers and messages as HTML: Markdown rendered without raw HTML, then sanitised by nh3
(no images, no links off the box), then each [n] turned into a citation chip."""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "h3", "h4", "h5",
    "h6", "hr", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_CITATION = re.compile(r"\[(\d{1,2})\]")


def _keep_local_links(tag: str, attribute: str, value: str) -> str | None:
    if tag == "a" and attribute == "href":
        # Only links within the box: an answer must never send a roper to an unknown host.
        return value if value.startswith("/") and not value.startswith("//") else None
    return value


def answer_html(markdown: str, *, citations: int) -> str:
    """Safe HTML for an answer; [n] becomes a chip only when source n exists."""
    rendered = _MARKDOWN.render(markdown)
    # Headings inside an answer sit below the page's own h1/h2.
    rendered = re.sub(r"<(/?)h[12]>", r"<\1h3>", rendered)
    clean = nh3.clean(
        rendered,
        tags=_TAGS,
        attributes={"a": {"href"}, "th": {"align"}, "td": {"align"}},
        attribute_filter=_keep_local_links,
        link_rel="noopener noreferrer",
        url_schemes=set(),
    )

    def chip(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if not 1 <= n <= citations:
            return match.group(0)
        label = f'class="cite" data-n="{n}" aria-label="Source {n}"'
        return f'<button type="button" {label}>{n}</button>'

    return _CITATION.sub(chip, clean)
