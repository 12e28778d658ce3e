"""The card's pages: ``card.md``, the self-contained ``card.html``, the MLflow headline metrics
and what ``advseg card`` prints, each axis's rows as the table gives them."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from keras_advseg.workflows.card import table

FIGURES = (
    ("Dice under each MRI corruption", "corruptions/fig_corruption_severity.png"),
    ("Certified Dice against sigma", "certified/fig_certified.png"),
    ("Certified voxels", "certified/fig_certificate.png"),
    ("Dice against FGSM eps", "adversarial/fig_eps.png"),
)
"""The figures ``card.html`` embeds (where the folder has them)."""


def card_rows(card: dict) -> list[tuple[str, str, str]]:
    """``(axis, measure, WT / TC / ET or value)`` rows shared by the Markdown and HTML cards:
    the flags first, then each axis's rows under its section's name."""
    rows = [("WARNING", "not a robustness result", f["message"]) for f in card.get("flags", [])]
    for axis in table.AXES:
        rows += [(axis.section, measure, value) for measure, value in axis.rows(card)]
    return rows


def headline_metrics(card: dict) -> dict[str, float]:
    """The card's numbers as MLflow metrics: ``card.clean_dice_wt``, ``card.worst_dice_eps0.05_wt``,
    ``card.corruptions_corrupted_dice_wt`` (``card.corruptions_rood_overall_wt`` where severities 1-5
    ran), ``card.certified_dice_sigma0.25_wt``, ``card.flagged``, ... (each axis's
    ``metrics``)."""
    flat = {}
    for axis in table.AXES:
        flat.update(axis.headline(card))
    flat["card.flagged"] = 1.0 if card.get("flags") else 0.0
    return flat


def provenance(card: dict) -> str:
    """Which data, code and date the card's numbers come from."""
    data = card.get("data") or {}
    model = (card.get("provenance") or {}).get("model") or {}
    sha = f"model SHA-256 {model['sha256'][:12]}; " if model.get("sha256") else ""
    return (
        f"{sha}Data: {data.get('kind', 'unknown')}, `{data.get('source') or 'source not recorded'}` "
        f"(hash {str(card.get('data_hash') or 'n/a')[:12]}); "
        f"commit {str(card.get('commit') or 'not a git checkout')[:12]}; "
        f"created {card.get('created', 'n/a')}."
    )


def card_markdown(card: dict) -> str:
    """``card.md``: the numbers, the plan, and what they can and cannot claim."""
    plan = card["plan"]
    files = ", ".join(f"`{run.name}/` ({run.short})" for run in table.RUNS)
    lines = [
        f"# Robustness card: `{card['model']}`\n",
        f"Plan **{plan['name']}** (seed {card['seed']}; {card['claims']['subjects']}); "
        f"keras-advseg {card['keras_advseg']}; schema {card['schema']} v{card['version']}. "
        "Regions WT / TC / ET.\n",
        provenance(card) + "\n",
        "| axis | measure | WT / TC / ET |",
        "|---|---|---|",
        *[f"| {a} | {m} | {v} |" for a, m, v in card_rows(card)],
        "",
        "## What this card can and cannot claim\n",
        *[f"- **{k}**: {v}" for k, v in card["claims"].items() if k != "subjects"],
        "",
        f"Files: {files}.\n",
    ]
    return "\n".join(lines)


def card_html(card: dict, out: Path) -> str:
    """``card.html``: one self-contained page (figures embedded as data URIs, no network)."""
    rows = "\n".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(m)}</td><td>{html.escape(v)}</td></tr>"
        for a, m, v in card_rows(card)
    )
    claims_html = "\n".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
        for k, v in card["claims"].items()
        if k != "subjects"
    )
    figures = "".join(_figure(Path(out) / relative, caption) for caption, relative in FIGURES)
    plan = card["plan"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Robustness card: {html.escape(card["model"])}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #eee; }} img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }}
</style></head><body>
<h1>Robustness card</h1>
<p><code>{html.escape(card["model"])}</code>: plan <b>{html.escape(plan["name"])}</b>
(seed {card["seed"]}; {html.escape(card["claims"]["subjects"])}); keras-advseg
{html.escape(card["keras_advseg"])}; schema {html.escape(card["schema"])} v{card["version"]}.
Regions WT / TC / ET.</p>
<p>{html.escape(provenance(card).replace("`", ""))}</p>
<table><tr><th>axis</th><th>measure</th><th>WT / TC / ET</th></tr>
{rows}
</table>
<h2>What this card can and cannot claim</h2>
<ul>{claims_html}</ul>
<h2>Figures</h2>
{figures}
</body></html>
"""


def _figure(path: Path, caption: str) -> str:
    """A figure embedded as a data URI ("" where the file is absent)."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{data}"><figcaption>'
        f"{html.escape(caption)}</figcaption></figure>"
    )


def summary_lines(card: dict, out) -> list[str]:
    """What ``advseg card`` prints."""
    lines = [f"{a}: {m}: {v}" for a, m, v in card_rows(card)]
    reused = f" (reused: {', '.join(card['reused'])})" if card["reused"] else ""
    lines.append(
        f"wrote {Path(out) / 'card.html'}, card.md and card.json in {card['seconds']:.0f} s{reused}"
    )
    return lines
