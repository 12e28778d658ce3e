"""MkDocs hook: replaces ``<!-- card-axes -->`` with the card's table of axes.

The table is :func:`keras_advseg.workflows.card.table.docs_table`, built from the same
:data:`~keras_advseg.workflows.card.table.AXES` that the card, the leaderboard and the study's
report read, so the page cannot drift from them.
"""

from __future__ import annotations

MARKER = "<!-- card-axes -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    from keras_advseg.workflows.card.table import docs_table

    return markdown.replace(MARKER, docs_table())
