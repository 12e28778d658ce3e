"""Evaluation below the workflow layer: attack and score, typed results, paired statistics, figures.

The names are imported on first use, so that ``evaluation.results``,
``evaluation.statistics`` and ``evaluation.figures`` (``advseg compare``) do not
start TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvalConfig": "keras_advseg.config",
    "evaluate": "keras_advseg.evaluation.robustness",
    "EvalResults": "keras_advseg.evaluation.results",
    "Evaluation": "keras_advseg.evaluation.results",
    "Summary": "keras_advseg.evaluation.results",
    "load_results": "keras_advseg.evaluation.results",
    "metric_names": "keras_advseg.evaluation.results",
    "summarize": "keras_advseg.evaluation.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
