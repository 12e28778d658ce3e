"""What a study's folder records so that a re-run continues it
(:func:`~keras_advseg.workflows.reproduce.reproduce`): which study it holds (``study.json``,
:func:`check_same_study`) and which steps finished, in how many seconds (``progress.json``,
:class:`Progress`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from keras_advseg.errors import InputError
from keras_advseg.io import FileFormatError, write_json_atomic

STUDY_DEFINITIONS = 2
"""Bumped when a step's outputs change meaning, so that a study folder of an earlier version is
not resumed with its finished steps reused: 2 = per-subject corruption draws, sigma in
standardised units (certificates and Gaussian-noise training), the audit's eighth item, the
cards' version 2."""


def check_same_study(out: Path, preset: str, data, data_seed: int) -> dict | None:
    """Refuses to continue a folder started with another preset, data or data seed (its models
    were trained on another split), or a non-empty folder no study started.

    Returns:
        The record to write in ``OUT/study.json`` (:func:`record_study`) once the study's
        first step starts, or None when the folder holds this study already: a start that
        fails before any step (an unreachable tracking store) pins nothing.

    Raises:
        InputError: naming the option that differs, or ``out`` is a non-empty folder that
            no study started.
    """
    record = out / "study.json"
    current = {
        "preset": preset,
        "data": str(Path(data).resolve()) if data is not None else None,
        "data_seed": data_seed,
        "definitions": STUDY_DEFINITIONS,
    }
    if record.is_file():
        try:
            started = json.loads(record.read_text())
            if not isinstance(started, dict):
                raise ValueError("not an object")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise FileFormatError(f"{record}: unreadable study record ({exc})") from None
        if started.get("definitions") != STUDY_DEFINITIONS:
            raise InputError(
                f"{out} holds a study of another keras-advseg (definitions "
                f"{started.get('definitions', 1)}, this one {STUDY_DEFINITIONS}: the corruption "
                "draws, the certificates' sigma and the cards changed meaning, so its finished "
                "steps cannot be reused). Use another --out"
            )
        for key, option in (
            ("preset", "--preset"),
            ("data", "--data"),
            ("data_seed", "--data-seed"),
        ):
            if started.get(key) != current[key]:
                raise InputError(
                    f"{out} holds a study started with {option} {started.get(key)}; "
                    f"received {current[key]}. Use another --out"
                )
        return None
    if not (out / "progress.json").is_file() and out.is_dir() and any(out.iterdir()):
        # never write into (and over) what the tool did not create: a study owns its folder
        raise InputError(
            f"{out}: a non-empty folder that is not a study of advseg reproduce (no study.json); "
            "choose an empty or new --out"
        )
    return current


def record_study(out: Path, record: dict | None) -> None:
    """Writes ``OUT/study.json`` (what :func:`check_same_study` returned; None: nothing)."""
    if record is not None:
        write_json_atomic(out / "study.json", record)


ELAPSED = "(elapsed)"
"""The key of the study's wall-clock seconds in ``progress.json`` (not a step)."""


class Progress:
    """Numbered steps with timings; finished steps and their seconds are recorded in
    ``progress.json`` and skipped on a re-run (``prepare`` and reports always run)."""

    def __init__(self, plan: list[str], record: Path):
        self.plan, self.record = plan, record
        self.done = _read_record(record) if record.is_file() else {}
        self.earlier = self.done.get(ELAPSED) or 0.0
        self.started = time.time()

    def elapsed(self) -> float:
        """Wall-clock seconds of every run of the study so far (steps run side by side count
        once), this one up to now."""
        return self.earlier + time.time() - self.started

    def _save(self) -> None:
        self.done[ELAPSED] = round(self.elapsed(), 1)
        write_json_atomic(self.record, self.done, indent=None)

    def timings(self) -> dict[str, float | None]:
        """Seconds of each finished step of the plan (None: recorded by an older version)."""
        return {name: self.done[name] for name in self.plan if name in self.done}

    def _number(self, name: str) -> str:
        return f"[{self.plan.index(name) + 1}/{len(self.plan)}] {name}"

    def is_done(self, name: str) -> bool:
        """Whether ``name`` finished before and is skipped (``prepare`` and reports never are)."""
        rerun = name == "prepare" or name.endswith("report")
        return name in self.done and not rerun

    def skipped(self, name: str) -> None:
        _say(f"{self._number(name)}: skipped (done before)")
        self._save()

    def begin(self, name: str, state: str = "running") -> float:
        """Announces ``name`` (``running``, or ``submitted`` to a cluster that starts it when it
        has room) and returns its start time."""
        _say(f"{self._number(name)}: {state}")
        return time.time()

    def end(self, name: str, started: float, where: str | None = None) -> None:
        """Records ``name`` as finished, with its seconds since ``started`` (and says on which
        node it ran, ``where``)."""
        seconds = time.time() - started
        self.done[name] = round(seconds, 1)
        _say(f"    {name}: done in {seconds:.0f} s" + (f" on {where}" if where else ""))
        self._save()


def _read_record(path: Path) -> dict[str, float | None]:
    """The finished steps recorded in ``progress.json`` (untrusted input): ``{step: seconds}``,
    or a list of step names (older versions).

    Raises:
        FileFormatError: neither.
    """
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(
            f"{path}: unreadable study progress ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return dict.fromkeys(value)
    if isinstance(value, dict) and all(
        v is None or (isinstance(v, (int, float)) and v >= 0) for v in value.values()
    ):
        return value
    raise FileFormatError(f"{path}: unreadable study progress (expected {{step name: seconds}})")


def _say(line: str) -> None:
    """Progress goes to standard error, so that standard output carries only results."""
    print(line, file=sys.stderr, flush=True)
