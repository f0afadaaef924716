"""The HTML both report pages share: one self-contained file per page (style and script
inline, figures by relative links), so a copied output folder still shows everything."""
from __future__ import annotations

import html
import os
from pathlib import Path

from conntool.reports.layout import Figure

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; max-width: 1100px; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 3px 7px; }
th { background: #eee; } th.sortable { cursor: pointer; } td.num { text-align: right; }
tr.flagged td { background: #fde8e8; } .flag { color: #b00; } .ok { color: #070; }
img.thumb { height: 70px; }
.methods { max-width: 1100px; line-height: 1.4; } .missing { color: #888; font-style: italic; }
"""

#: Click a header of a ``table.sortable`` to sort by it (numbers as numbers); again to reverse.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.classList.add("sortable");
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.from(body.rows);
    var up = th.dataset.order !== "up";
    th.dataset.order = up ? "up" : "down";
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.value || a.cells[column].textContent;
      var y = b.cells[column].dataset.value || b.cells[column].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var order = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return up ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def esc(value) -> str:
    return html.escape(str(value))


def relative(path: Path, page: Path) -> str:
    """Link from ``page`` to ``path`` (POSIX, relative: the folder can be moved)."""
    return Path(os.path.relpath(path, page.parent)).as_posix()


def page(title: str, body: str, script: str = "") -> str:
    scripts = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n{body}\n{scripts}</body></html>\n")


def figure(path: Path | None, spec: Figure, page_path: Path) -> str:
    """A figure with its title and caption, or a note that it was not drawn."""
    if path is None:
        return f'<p class="missing">{esc(spec.title)}: not drawn for this run.</p>'
    return (f'<figure><img src="{esc(relative(path, page_path))}" alt="{esc(spec.title)}">'
            f"<figcaption><b>{esc(spec.title)}.</b> {esc(spec.caption)}</figcaption></figure>")


def number(value, fmt: str = "{:.3f}") -> str:
    """A table cell for a number (sortable by its value); n/a for None."""
    if value is None:
        return '<td class="num" data-value="">n/a</td>'
    return f'<td class="num" data-value="{value}">{esc(fmt.format(value))}</td>'


def table(headers: list[str], rows: list[str], sortable: bool = False) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
