"""A study's results as the report reads them: each model's evaluation, with its mean Dice under
the study's corruptions and its certified Dice beside the attacks."""

from __future__ import annotations

import functools
from pathlib import Path

from keras_advseg.evaluation.results import load_results
from keras_advseg.workflows.card.axes.corruptions import corrupted_means

__all__ = ["CERTIFIED", "CORRUPTED", "corrupted_means", "study_loader"]

CORRUPTED = "corrupted"
"""The key of a model's mean Dice under the study's corruptions in its loaded results."""

CERTIFIED = "certified"
"""The key of a model's certified Dice (at eps = sigma) in its loaded results."""


def study_loader(out: Path):
    """``load(name)``: the evaluation ``name`` of the study (or seed) folder ``out``, read
    once however often the report's sections ask for it. Where the model was also scored under
    MRI corruptions (``corruptions/<name>/``), each subject's Dice averaged over every corrupted
    scan is there too, as attack ``corrupted`` at eps 0, so that it is paired and pooled over
    seeds like any attack; and where it was certified (``certify/<name>/``), each subject's
    certified Dice as attack ``certified`` at eps sigma."""

    def load(name):
        result = load_results(Path(out) / "evals" / name)
        table = Path(out) / "corruptions" / name / "corruptions.csv"
        if table.is_file():
            result.values[(CORRUPTED, 0.0)] = corrupted_means(table)
        certified = Path(out) / "certify" / name / "certified.csv"
        if certified.is_file():
            from keras_advseg.workflows.certify import read_certified

            for sigma, by_subject in read_certified(certified).items():
                result.values[(CERTIFIED, sigma)] = by_subject
        return result

    return functools.cache(load)
