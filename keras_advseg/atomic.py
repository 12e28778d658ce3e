"""Writing results without ever leaving a half-written file."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Writes ``text`` to a temporary file beside ``path`` and renames it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Saves a Matplotlib figure as PNG beside ``path``, renames it into place and closes the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def rows_to_csv(rows: list[dict], fields=None) -> str:
    """CSV text of ``rows`` with the columns ``fields`` (default: the first row's keys)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields or rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
