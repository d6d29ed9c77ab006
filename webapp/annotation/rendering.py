"""Model output is untrusted: Markdown is rendered with raw HTML disabled, then sanitised by nh3
(an allow-list: no scripts, no event handlers, no javascript: links, no styles)."""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_TAGS = {"p", "br", "hr", "pre", "code", "em", "strong", "del", "s", "blockquote", "ul", "ol", "li",
                "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a", "span"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"},
                      "ol": {"start"}}


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "js-default": CommonMark without raw HTML, plus tables and strikethrough; linkify off.
    return MarkdownIt("js-default").enable(["table", "strikethrough"])


def render_markdown(text: str) -> Markup:
    """Safe HTML for untrusted Markdown.

    >>> str(render_markdown("**hi** <script>alert(1)</script> [x](javascript:alert(1))"))
    '<p><strong>hi</strong> &lt;script&gt;alert(1)&lt;/script&gt; [x](javascript:alert(1))</p>\\n'
    """
    html = _markdown().render(text or "")
    return Markup(nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https",
                                                                                              "mailto"},
                            link_rel="noopener noreferrer nofollow"))


def render_turns(messages: list[dict] | None, text: str) -> list[dict]:
    """Chat turns (role + safe HTML) for a chat, or one untitled turn for plain text."""
    if messages:
        return [{"role": m.get("role", ""), "html": render_markdown(str(m.get("content", "")))} for m in messages]
    return [{"role": "", "html": render_markdown(text)}]
