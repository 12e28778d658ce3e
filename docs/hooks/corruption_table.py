"""MkDocs hook: replaces ``<!-- corruption-table -->`` with the corruptions and their severities.

The list and table are :data:`keras_advseg.corruptions.CORRUPTIONS` and
:func:`keras_advseg.corruptions.severity_table`, so the page cannot drift from the registry.
"""

from __future__ import annotations

MARKER = "<!-- corruption-table -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    from keras_advseg.corruptions import CORRUPTIONS, severity_table

    lines = [f"- `{entry.name}` ({entry.kind}): {entry.description}." for entry in CORRUPTIONS]
    lines += [
        "",
        "| corruption | parameter (unit) | 1 | 2 | 3 | 4 | 5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in severity_table():
        parameters = [(k, v) for k, v in row.items() if k not in ("name", "display", "kind")]
        for index, (parameter, values) in enumerate(parameters):
            name = f"`{row['name']}`" if index == 0 else ""
            lines.append(f"| {name} | {parameter} | " + " | ".join(f"{v:g}" for v in values) + " |")
    return markdown.replace(MARKER, "\n".join(lines))
