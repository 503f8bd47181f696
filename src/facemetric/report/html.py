"""A self-contained HTML page: a metrics table and figures side by side."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def render_report(
    title: str,
    intro: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    figures: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> str:
    """``figures``: (relative image path, caption). Returns the page as a string."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    figs = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(cap)}"><figcaption>'
        f"{html.escape(cap)}</figcaption></figure>"
        for src, cap in figures
    )
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
.figs {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; text-align: center; }} img {{ width: 300px; }}
figcaption {{ font-size: 0.8em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(intro)}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<div class="figs">{figs}</div>
<ul>{notes_html}</ul>
</body></html>
"""
