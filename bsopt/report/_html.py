"""HTML from the analysis's text data: paragraphs, lists and tables of styled spans.

Every piece of text is escaped here, once, and its style becomes a tag; nothing is parsed
back out of Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
import html

from bsopt.analysis._text import Line, Table

_TAGS = {"strong": "strong", "code": "code", "em": "em"}


def html_line(text: Line) -> str:
    """The spans of ``text``, escaped, each in its style's tag."""
    out = []
    for span in text:
        escaped = html.escape(span.text, quote=False)
        tag = _TAGS.get(span.style)
        out.append(f"<{tag}>{escaped}</{tag}>" if tag else escaped)
    return "".join(out)


def html_paragraphs(lines: Sequence[Line]) -> str:
    return "\n".join(f"<p>{html_line(p)}</p>" for p in lines)


def html_list(items: Sequence[Line]) -> str:
    return "<ul>" + "".join(f"<li>{html_line(i)}</li>" for i in items) + "</ul>"


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html_line(c)}</th>" for c in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html_line(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
