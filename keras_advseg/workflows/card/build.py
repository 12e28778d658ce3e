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


def build_card(
    out: Path,
    plan: CardPlan,
    model_ref,
    reference_ref,
    seed,
    model_path=None,
    prepared=None,
    reference_path=None,
) -> dict:
    """``card.json``'s content from the axes' folders (their files are untrusted input).

    Args:
        out: The card's folder.
        plan: What the card ran.
        model_ref, reference_ref: The model and reference as the user named them.
        seed: The card's seed.
        model_path: The carded model's file (its input grid, its SHA-256); None: unknown.
        prepared: The prepared test data (its subjects, the inputs' units and range); None:
            unknown.
        reference_path: The reference model's file (its SHA-256).

    Raises:
        FileFormatError: an axis's file is missing or malformed.
    """
    from keras_advseg import __version__

    sources = Sources(out, plan, model_path)
    sections = read_sections(sources)
    # the worst case's row says when the audit found lower: the audit's word on that axis
    sections["adversarial"]["audit_lower"] = audit.lower_bound(sources)
    corruptions_summary = sources.document("corruptions", corruptions.SUMMARY)
    card = {
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
    card["provenance"] = card_provenance(card, sources, model_path, prepared, reference_path)
    card["results"] = results_of(card, sources)
    card["unreliable"] = unreliable_of(card)
    return card


def results_of(card: dict, sources) -> list[dict]:
    """Every axis's numbers as entries of ``results``, in the table's order (``sources`` None:
    a card converted from an older version, without intervals or subjects)."""
    return [entry for axis in table.AXES if axis.results for entry in axis.results(card, sources)]


def unreliable_of(card: dict) -> dict:
    """The audit's verdict as the card's ``unreliable`` flag."""
    return audit.unreliable(card)


def card_provenance(card: dict, sources, model_path, prepared, reference_path) -> dict:
    """What every number of the card depends on: the model (file name, as named, SHA-256), the
    data (source, digest, split, subjects, what the inputs hold), the seeds, the software and
    the hardware, and the plan's name."""
    from keras_advseg.export import load_source
    from keras_advseg.workflows.card.reuse import digest

    def model(path, ref):
        if path is None and ref is None:
            return None
        described = {
            "name": Path(path).name if path is not None else None,
            "reference": str(ref) if ref is not None else None,
            "sha256": digest(Path(path)) if path is not None else None,
        }
        source = load_source(path) if path is not None else None
        if source is not None:  # a converted model (advseg import-onnx): where it came from
            described["source"] = source
        return described

    split = None
    if sources is not None:
        split = sources.document("adversarial", "summary.json").get("split")
    return {
        "model": model(model_path, card["model"]),
        "reference_model": model(reference_path, card.get("reference")),
        "data": {
            **card["data"],
            "digest": card.get("data_hash"),
            "split": split if isinstance(split, str) and split else "test",
            "subjects": _subjects(sources),
            "input": input_description(prepared),
        },
        "seeds": {"card": int(card["seed"])},
        "software": software(card),
        "hardware": hardware(),
        "plan": card["plan"]["name"],
    }


def recorded_provenance(card: dict) -> dict:
    """The provenance a card's own fields record (its model as named, data, digest, seed,
    version and commit; the rest null): that of a card converted from an older version."""
    return {
        "model": {"name": None, "reference": str(card.get("model")), "sha256": None},
        "reference_model": (
            {"name": None, "reference": str(card["reference"]), "sha256": None}
            if card.get("reference")
            else None
        ),
        "data": {
            "source": (card.get("data") or {}).get("source"),
            "kind": (card.get("data") or {}).get("kind", "unknown"),
            "digest": card.get("data_hash"),
            "split": "test",
            "subjects": None,
            "input": None,
        },
        "seeds": {"card": card.get("seed")},
        "software": {"keras_advseg": card.get("keras_advseg"), "commit": card.get("commit")},
        "hardware": {},
        "plan": card["plan"]["name"],
    }


def _subjects(sources) -> list[str] | None:
    from keras_advseg.workflows.card.axes.common import subjects_in

    return subjects_in(sources, "adversarial", "per_subject.csv")


def input_description(prepared) -> dict | None:
    """What the model's inputs hold: the normalisation, its units (what eps and sigma
    measure), the sequences, and the smallest and largest value over the test inputs."""
    from keras_advseg.data.prepare import load_prepared
    from keras_advseg.vocabulary import MODALITIES

    if prepared is None:
        return None
    data = load_prepared(prepared)
    low, high = float("inf"), float("-inf")
    for subject in data.ids("test"):
        image, _ = data.load(subject)
        low, high = min(low, float(image.min())), max(high, float(image.max()))
    normalization = data.config.normalization
    units = (
        "z-scores: each sequence minus its mean over the training split's brain voxels, "
        "divided by their standard deviation; eps and sigma are in these units"
        if normalization == "global"
        else "z-scores: each sequence of each scan standardised over its own brain voxels; "
        "eps and sigma are in these units"
    )
    return {
        "normalization": normalization,
        "units": units,
        "value_range": [low, high] if data.ids("test") else None,
        "modalities": list(MODALITIES),
    }


def software(card: dict) -> dict:
    """The versions the card was computed with."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "keras_advseg": card["keras_advseg"],
        "commit": card.get("commit"),
        "python": platform.python_version(),
        **{name: installed(name) for name in ("keras", "tensorflow", "numpy", "mlflow")},
    }


def hardware() -> dict:
    """The machine: platform, processor (as the runs' ``env.cpu`` tag names it), CPU count and
    the accelerators TensorFlow sees."""
    import os
    import platform
    import sys

    from keras_advseg.tracking import cpu_model

    gpus = []
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cpus": os.cpu_count(),
        "gpus": gpus,
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
