"""The report as a list of blocks rendered twice: to Markdown and to one self-contained HTML page.

Blocks: ``h1``, ``h2``, ``p``, ``warning``, ``list``, ``code``, ``table`` (a DataFrame), ``figure``
((file name, caption)) and ``links`` ([(file name, what it holds)]). The page is laid out for a 1,280 px
window: tables wrap their cells instead of growing sideways, code wraps its long lines.
Used by ``python -m results.report``.
"""

from __future__ import annotations

import html
from typing import Any

from results import tables

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;line-height:1.4}"
         "table{border-collapse:collapse;font-size:13px;margin:1em 0;max-width:100%}"
         "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;"
         "overflow-wrap:break-word}th{background:#f2f2f2}td:first-child{min-width:14em}"
         "img{max-width:100%}figcaption{font-style:italic;color:#444}"
         ".warning{background:#fff3cd;border:2px solid #d39e00;padding:0.8em;margin:1em 0}"
         ".lead{font-size:1.1em}pre{background:#f6f6f6;padding:0.6em;white-space:pre-wrap}")


class Document:
    """Blocks rendered twice: to Markdown and to HTML (tables from DataFrames, figures as images)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def add(self, kind: str, content: Any) -> None:
        self.blocks.append((kind, content))

    def markdown(self) -> str:
        parts = []
        for kind, content in self.blocks:
            if kind in ("h1", "h2"):
                parts.append(("# " if kind == "h1" else "## ") + content)
            elif kind in ("p", "lead"):
                parts.append(f"**{content}**" if kind == "lead" else content)
            elif kind == "warning":
                parts.append(f"> **WARNING:** {content}")
            elif kind == "list":
                parts.append("\n".join(f"- {item}" for item in content))
            elif kind == "links":
                parts.append("\n".join(f"- [{name}]({name}): {what}" for name, what in content))
            elif kind == "code":
                parts.append(f"```\n{content}\n```")
            elif kind == "table":
                parts.append(tables.markdown_table(content))
            elif kind == "figure":
                parts.append(f"![{content[1]}]({content[0]})\n\n*{content[1]}*")
        return "\n\n".join(parts) + "\n"

    def html(self, title: str) -> str:
        parts = []
        for kind, content in self.blocks:
            if kind in ("h1", "h2"):
                parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
            elif kind in ("p", "lead"):
                parts.append(f'<p class="{kind}">{html.escape(content)}</p>')
            elif kind == "warning":
                parts.append(f'<div class="warning"><strong>WARNING:</strong> {html.escape(content)}</div>')
            elif kind == "list":
                parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in content) + "</ul>")
            elif kind == "links":
                items = (f'<li><a href="{html.escape(name)}">{html.escape(name)}</a>: '
                         f"{html.escape(what)}</li>" for name, what in content)
                parts.append("<ul>" + "".join(items) + "</ul>")
            elif kind == "code":
                parts.append(f"<pre>{html.escape(content)}</pre>")
            elif kind == "table":
                parts.append(content.to_html(index=False, border=0, na_rep=tables.MISSING, escape=True))
            elif kind == "figure":
                name, caption = (html.escape(part) for part in content)
                parts.append(f'<figure><img src="{name}" alt="{caption}">'
                             f"<figcaption>{caption}</figcaption></figure>")
        return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
                + "\n".join(parts) + "\n</body></html>\n")
