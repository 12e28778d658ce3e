"""``card.json``'s content, built from the axes' folders (untrusted input) through the table."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from keras_advseg.errors import AdvsegError, FileFormatError
from keras_advseg.io import read_json
from keras_advseg.workflows.card import table
from keras_advseg.workflows.card.axes import audit, corruptions
from keras_advseg.workflows.card.axes.clean import card_flags
from keras_advseg.workflows.card.plans import CardPlan, claims
from keras_advseg.workflows.card.schema import CARD_SCHEMA, CARD_VERSION


class Sources:
    """The folders of a card's commands, each file read once, for the axes' ``read``.

    Args:
        out: The card's folder (each command's folder is ``out / <run>``).
        plan: What the card ran.
        model_path: The carded model's file (for its input grid), or None.
    """

    def __init__(self, out: Path, plan: CardPlan, model_path=None):
        self.out, self.plan, self.model_path = Path(out), plan, model_path
        self._read: dict = {}

    def folder(self, run: str) -> Path:
        """The folder of the command ``run``."""
        return self.out / run

    def evaluation(self):
        """``advseg evaluate``'s results (:class:`~keras_advseg.evaluation.results.EvalResults`).

        Raises:
            FileFormatError: not an evaluation folder, or a malformed one.
        """
        from keras_advseg.evaluation.results import load_results

        if "evaluation" not in self._read:
            self._read["evaluation"] = load_results(self.folder("adversarial"))
        return self._read["evaluation"]

    def summary(self):
        """The evaluation's summary.

        Raises:
            FileFormatError: it has none.
        """
        summary = self.evaluation().summary
        if summary is None:
            raise FileFormatError(f"{self.folder('adversarial')}: no summary.json")
        return summary

    def document(self, run: str, name: str) -> dict:
        """The JSON object ``name`` of the command ``run``'s folder.

        Raises:
            FileFormatError: missing, unreadable or not an object, naming the file.
        """
        if (run, name) not in self._read:
            self._read[(run, name)] = read_json(self.folder(run) / name, f"{run} file")
        return self._read[(run, name)]


def build_card(out: Path, plan: CardPlan, model_ref, reference_ref, seed, model_path=None) -> dict:
    """``card.json``'s content from the axes' folders (their files are untrusted input);
    ``model_path``: the carded model's file (for its input grid).

    Raises:
        FileFormatError: an axis's file is missing or malformed.
    """
    from keras_advseg import __version__

    sources = Sources(out, plan, model_path)
    sections = read_sections(sources)
    # the worst case's row says when the audit found lower: the audit's word on that axis
    sections["adversarial"]["audit_lower"] = audit.lower_bound(sources)
    corruptions_summary = sources.document("corruptions", corruptions.SUMMARY)
    return {
        "schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "model": str(model_ref),
        "reference": str(reference_ref) if reference_ref else None,
        "data_hash": corruptions_summary.get("data_hash"),
        "data": data_description(corruptions_summary),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": _commit(),
        "flags": card_flags(sections["clean"]["dice"]),
        "plan": asdict(plan),
        "seed": seed,
        "claims": claims(plan),
        "keras_advseg": __version__,
        **sections,
    }


def read_sections(sources: Sources) -> dict[str, dict]:
    """Every axis's section, in the table's order.

    Raises:
        FileFormatError: an axis's file is missing or malformed, naming its folder.
    """
    sections: dict[str, dict] = {}
    for axis in table.AXES:
        try:
            value = axis.read(sources)
        except AdvsegError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise FileFormatError(
                f"{sources.folder(axis.run)}: malformed for the card's {axis.name} axis "
                f"({type(exc).__name__}: {exc})"
            ) from None
        section = sections.setdefault(axis.section, {})
        if axis.key is None:
            section.update(value)
        else:
            section[axis.key] = value
    return sections


def data_description(corruptions_summary: dict) -> dict:
    """The card's dataset: the raw source it was prepared from, and whether it is the built-in
    phantom (a ``phantom.json`` beside the subjects)."""
    source = corruptions_summary.get("data") or corruptions_summary.get("source")
    kind = "unknown"
    if isinstance(source, str) and source:
        kind = (
            "phantom (MNI152-based, synthetic)"
            if (Path(source) / "phantom.json").is_file()
            else "user data"
        )
    return {"source": source if isinstance(source, str) else None, "kind": kind}


def _commit() -> str | None:
    from keras_advseg.tracking import git_commit

    return git_commit(Path(__file__).resolve().parent)
