"""The checkpoint state is read back as untrusted input."""

from __future__ import annotations

import json
import math

import pytest

from keras_advseg.config import TrainConfig
from keras_advseg.io import FileFormatError
from keras_advseg.training.checkpoint import read_state, restored_best, start_epoch, state_config


def write_state(out, value):
    path = out / "checkpoint" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_missing_state_is_a_new_run(tmp_path):
    assert read_state(tmp_path) is None and start_epoch(None) == 0
    assert restored_best(None) == {"score": -math.inf, "epoch": None}


def test_valid_state(tmp_path):
    config = TrainConfig.from_preset("smoke")
    write_state(
        tmp_path,
        {
            "epoch": 2,
            "run_id": "r",
            "best_score": 0.5,
            "best_epoch": 1,
            "finished": False,
            "config": config.__dict__,
        },
    )
    state = read_state(tmp_path)
    assert start_epoch(state) == 2 and restored_best(state) == {"score": 0.5, "epoch": 1}
    assert state_config(state, tmp_path) == config


@pytest.mark.parametrize(
    "value, message",
    [
        ("{broken", "unreadable checkpoint state"),
        ({"epoch": -1, "config": {}}, "expected 'epoch' >= 0 and 'config'"),
        ({"epoch": "2", "config": {}}, "expected 'epoch' >= 0 and 'config'"),
        ({"epoch": 1}, "expected 'epoch' >= 0 and 'config'"),
    ],
)
def test_corrupt_state_names_the_file(tmp_path, value, message):
    path = write_state(tmp_path, value)
    with pytest.raises(FileFormatError, match=message) as info:
        read_state(tmp_path)
    assert str(info.value).startswith(str(path))


def test_invalid_stored_configuration(tmp_path):
    write_state(tmp_path, {"epoch": 1, "config": {"model": "unet9d"}})
    with pytest.raises(FileFormatError, match="invalid stored configuration"):
        state_config(read_state(tmp_path), tmp_path)
