"""A self-contained HTML page for the ``compare`` report (no external resources)."""

import html

__all__ = ["render_report_html"]

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; font-size: .88rem; margin: .5rem 0; }
th, td { border: 1px solid #ccc; padding: .25rem .55rem; text-align: right; }
th { background: #f2f4f7; } td.text, th.text { text-align: left; }
tr.best td { background: #fff6d6; font-weight: 600; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.summary td { text-align: left; }
.muted { color: #666; font-size: .85rem; }
"""

# After load, record how many images decoded; tests read it with headless Chromium.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', imgs.length);
  document.body.setAttribute('data-images-loaded', ok);
});
"""


def _table(rows, columns, highlight=None):
    head = (
        "".join(
            f'<th class="{_cls(v)}">{html.escape(str(c))}</th>' for c, v in zip(columns, rows[0])
        )
        if rows
        else ""
    )
    body = []
    for i, row in enumerate(rows):
        cls = ' class="best"' if highlight is not None and i == highlight else ""
        cells = "".join(f'<td class="{_cls(v)}">{html.escape(_fmt(v))}</td>' for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cls(value):
    return "num" if isinstance(value, (int, float)) or "±" in str(value) else "text"


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_report_html(
    title, summary, columns, rows, figures, best_row=None, notes=(), sections=()
):
    """Render the report page.

    Parameters
    ----------
    title : str
    summary : list of (str, value)
        Key facts shown at the top (data set, network accuracy, best surrogate...).
    columns : list of str
        Header of the results table.
    rows : list of list
        Results table rows.
    figures : list of (filename, caption)
        PNG files next to ``index.html``.
    best_row : int or None
        Row of the table to highlight.
    notes : iterable of str
        Short paragraphs shown under the title.
    sections : iterable of str
        HTML fragments (already escaped) shown after the results table.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f'<p class="muted">{html.escape(n)}</p>' for n in notes]
    parts.append("<h2>Summary</h2>")
    parts.append(
        '<table class="summary"><tbody>'
        + "".join(
            f'<tr><th class="text">{html.escape(k)}</th><td class="text">{html.escape(_fmt(v))}</td></tr>'
            for k, v in summary
        )
        + "</tbody></table>"
    )
    parts.append("<h2>Surrogates: cross-validated faithfulness and accuracy</h2>")
    parts.append(_table(rows, columns, best_row))
    parts.extend(sections)
    if figures:
        parts.append("<h2>Figures</h2>")
        for name, caption in figures:
            parts.append(
                f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)
