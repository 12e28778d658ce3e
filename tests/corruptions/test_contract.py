"""The contract every registered corruption keeps (keras-hub's ``run_layer_test`` idea).

Each test is parametrised over :data:`~keras_advseg.corruptions.CORRUPTIONS` itself, so a
corruption registered tomorrow runs it without an edit here. Through
:func:`~keras_advseg.corruptions.corrupt`, it keeps the scan's shape, float32 and finiteness;
severity 0 is the clean scan; the same seed and subject give the same scan, and another
subject or seed another one exactly when it draws from its random stream; the levels grade it
(further from the clean scan at each severity, over subjects); ``return_params`` records the
registry's level and what was drawn, per sequence or for the scan as its ``per_sequence`` fact
says; only the chosen sequences change; the background is the clean scan's brain mask.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from support import smooth_head

import keras_advseg.corruptions.core as corruption_core
from keras_advseg.corruptions import CORRUPTIONS, SEVERITIES, corrupt, parse_corruptions
from keras_advseg.data.subject import MODALITIES
from keras_advseg.errors import InputError

SHAPE = (24, 26, 16)
"""At least 22 voxels across the phase-encoding axes: ghosting's level 1 (every 11th k-space
plane but the centre) has planes to attenuate only from 22 planes on."""
SPACING = (1.5, 2.0, 2.5)
SUBJECTS = tuple(f"subject-{i}" for i in range(6))
CHOSEN = ("t1gd", "flair")
"""The sequences a ``modalities`` test lets a corruption touch (two: a swap needs a pair)."""


def head(seed: int = 0) -> np.ndarray:
    """A smooth ellipsoidal 'brain' of four sequences in scanner-like intensities, 0 outside."""
    return smooth_head(SHAPE, np.array(SHAPE) / 2 - 1, seed)


IMAGE = head()
BACKGROUND = ~np.any(IMAGE != 0, axis=-1)


def distance(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, "float64") - b) ** 2)))


def run(name, severity, *, subject="subject-0", seed=0, **options):
    return corrupt(IMAGE, name, severity, spacing=SPACING, seed=seed, subject=subject, **options)


class CountingStream:
    """A random stream that counts the values drawn from it."""

    def __init__(self, stream: np.random.Generator, drawn: list):
        self._stream, self._drawn = stream, drawn

    def __getattr__(self, name):
        method = getattr(self._stream, name)

        def draw(*args, **kwargs):
            self._drawn.append(name)
            return method(*args, **kwargs)

        return draw


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_the_entry_states_what_its_function_takes(name):
    entry = CORRUPTIONS.get(name)
    assert entry.display and entry.description, name
    assert entry.kind in ("scanner", "operator") and name in parse_corruptions(entry.kind)
    assert isinstance(entry.per_sequence, bool)
    # five levels of every parameter, each with its unit, graded one way
    assert entry.levels and set(entry.units) == set(entry.levels), name
    for key, values in entry.levels.items():
        assert len(values) == len(SEVERITIES) == 5, (name, key)
        steps = np.diff(np.asarray(values, float))
        assert np.all(steps > 0) or np.all(steps < 0), (name, key, values)
    # the function takes the level's parameters, the stream, the record, and a volume of one
    # sequence (per_sequence) or the whole scan with the channels it may touch
    parameters = inspect.signature(entry.load()).parameters
    assert set(entry.levels) | {"spacing", "rng", "record"} <= set(parameters), name
    assert ("channels" in parameters) != entry.per_sequence, name


def test_displays_are_unique_and_the_kinds_cover_the_registry():
    displays = [entry.display for entry in CORRUPTIONS]
    assert len(set(displays)) == len(displays), displays
    kinds = parse_corruptions("scanner") + parse_corruptions("operator")
    assert sorted(kinds) == sorted(CORRUPTIONS.names())


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_severity_keeps_shape_dtype_finiteness_and_the_background(name):
    for severity in (0, *SEVERITIES):
        out = run(name, severity)
        assert out.shape == IMAGE.shape and out.dtype == np.float32, (severity, out.dtype)
        assert np.isfinite(out).all(), severity
        assert not out[BACKGROUND].any(), severity
    with pytest.raises(InputError, match="severity must be an integer 0-5"):
        run(name, max(SEVERITIES) + 1)


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_severity_zero_is_a_copy_of_the_clean_scan(name):
    out, params = run(name, 0, return_params=True)
    np.testing.assert_array_equal(out, IMAGE)
    assert params == {}
    out[0, 0, 0, 0] += 1  # a copy: the caller's scan is untouched
    assert IMAGE[0, 0, 0, 0] != out[0, 0, 0, 0]


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_the_same_seed_and_subject_give_the_same_scan_and_record(name):
    out, params = run(name, 3, return_params=True)
    again, params_again = run(name, 3, return_params=True)
    np.testing.assert_array_equal(again, out)
    assert params_again == params
    np.testing.assert_array_equal(run(name, 3), out)  # the record changes nothing


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_another_subject_or_seed_changes_the_scan_exactly_when_it_draws(name, monkeypatch):
    drawn: list = []
    draws = corruption_core.draws
    monkeypatch.setattr(corruption_core, "draws", lambda *key: CountingStream(draws(*key), drawn))
    by_subject = {run(name, 3, subject=s).tobytes() for s in SUBJECTS}
    by_seed = {run(name, 3, subject=None, seed=seed).tobytes() for seed in range(6)}
    if drawn:
        assert len(by_subject) > 1, f"{name} draws ({set(drawn)}) but every subject is alike"
        assert len(by_seed) > 1, f"{name} draws ({set(drawn)}) but every seed is alike"
    else:
        assert len(by_subject) == len(by_seed) == 1, f"{name} draws nothing but varies"


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_each_level_lies_further_from_the_clean_scan(name):
    """Over subjects, the mean distance from the clean scan grows with the severity (the same
    unit draw of a subject at every level, only larger)."""
    means = [
        np.mean([distance(run(name, severity, subject=s), IMAGE) for s in SUBJECTS])
        for severity in (0, *SEVERITIES)
    ]
    assert means[0] == 0
    assert all(b > a for a, b in zip(means, means[1:])), means


def _sequences(params) -> list[str]:
    found = params.get("sequences", params.get("sequence", []))
    return [found] if isinstance(found, str) else list(found)


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_the_record_holds_the_level_and_the_draw_of_each_sequence(name):
    entry = CORRUPTIONS.get(name)
    for severity in SEVERITIES:
        out, params = run(name, severity, return_params=True)
        assert json.loads(json.dumps(params)) == params  # JSON as it is
        level = {key: values[severity - 1] for key, values in entry.levels.items()}
        assert params["level"] == pytest.approx(level), severity
        changed = {
            MODALITIES[c]
            for c in range(len(MODALITIES))
            if not np.array_equal(out[..., c], IMAGE[..., c])
        }
        if entry.per_sequence:  # one draw per sequence, under its name
            assert set(params) == {"level", *MODALITIES}, set(params)
        else:  # one draw for the scan, naming the sequences it touched
            touched = _sequences(params)
            assert touched and set(touched) <= set(MODALITIES), params
            assert changed <= set(touched), (changed, touched)


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_only_the_chosen_sequences_change(name):
    entry = CORRUPTIONS.get(name)
    everywhere = run(name, 5)
    out, params = run(name, 5, modalities=CHOSEN, return_params=True)
    chosen = [MODALITIES.index(m) for m in CHOSEN]
    others = [c for c in range(len(MODALITIES)) if c not in chosen]
    np.testing.assert_array_equal(out[..., others], IMAGE[..., others])
    assert any(not np.array_equal(out[..., c], IMAGE[..., c]) for c in chosen)
    if entry.per_sequence:  # each sequence its own draw, whatever else is corrupted
        np.testing.assert_array_equal(out[..., chosen], everywhere[..., chosen])
        assert set(params) == {"level", *CHOSEN}
    else:
        assert set(_sequences(params)) <= set(CHOSEN), params


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_the_background_is_the_clean_scans_mask(name):
    """``keep_background`` zeroes exactly the voxels outside the clean scan's brain: the
    corruption without it, masked."""
    kept = run(name, 4)
    free = run(name, 4, keep_background=False)
    np.testing.assert_array_equal(kept, np.where(BACKGROUND[..., None], 0, free))
