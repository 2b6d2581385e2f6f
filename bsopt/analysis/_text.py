"""Text as data: styled spans, paragraphs and tables, and their Markdown and plain forms.

The analysis states its findings as :class:`Span` sequences rather than as Markdown, so
that each output (Markdown, plain text for a terminal, HTML in ``bsopt.report``) renders the
same words from the same data and none of them has to parse another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Span styles and their Markdown markers.
_MARKDOWN = {"": "", "strong": "**", "code": "`", "em": "*"}


@dataclass(frozen=True)
class Span:
    """A piece of text in one style: ``""`` (plain), ``"strong"``, ``"code"`` or ``"em"``."""

    text: str
    style: str = ""


#: A paragraph, a table cell or a list item: spans read in order.
Line = tuple[Span, ...]


@dataclass(frozen=True)
class Table:
    """A table of :data:`Line` cells; ``align`` holds ``"left"`` or ``"right"`` per column."""

    header: tuple[Line, ...]
    rows: tuple[tuple[Line, ...], ...]
    align: tuple[str, ...]


def strong(text: str) -> Span:
    return Span(text, "strong")


def code(text: str) -> Span:
    return Span(text, "code")


def line(*parts: str | Span) -> Line:
    """A :data:`Line` of ``parts``: strings are plain spans; empty ones are dropped."""
    spans = (p if isinstance(p, Span) else Span(p) for p in parts)
    return tuple(s for s in spans if s.text)


def markdown(text: Line) -> str:
    return "".join(f"{_MARKDOWN[s.style]}{s.text}{_MARKDOWN[s.style]}" for s in text)


def plain(text: Line) -> str:
    return "".join(s.text for s in text)


def markdown_table(table: Table) -> str:
    rule = "|" + "".join("---:|" if a == "right" else "---|" for a in table.align)
    rows = [table.header, *table.rows]
    cells = ["| " + " | ".join(markdown(c) for c in row) + " |" for row in rows]
    return "\n".join([cells[0], rule, *cells[1:]])


def markdown_list(items: Sequence[Line]) -> str:
    return "\n".join(f"- {markdown(item)}" for item in items)


# ---------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def names(items: Sequence[object]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    words = [str(i) for i in items]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def difference(gap: float, fraction: bool, *, signed: bool = False, unit: bool = True) -> str:
    """A difference in percentage points for fractions, else in the metric's units."""
    value = 100 * gap if fraction else gap
    unit_text = " pp" if unit and fraction else ""
    text = f"{value:+.2g}" if signed and value != 0 else f"{abs(value):.2g}"
    return text.replace("-", "−") + unit_text
