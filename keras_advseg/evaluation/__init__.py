"""Evaluation below the workflow layer: attack and score, typed results, paired statistics, figures.

The names are imported on first use, so that ``evaluation.results``,
``evaluation.statistics`` and ``evaluation.figures`` (``advseg compare``) do not
start TensorFlow.
"""

from __future__ import annotations

from keras_advseg._lazy import lazy_exports

_EXPORTS = {
    "EvalConfig": "keras_advseg.config",
    "evaluate": "robustness",
    "EvalResults": "results",
    "Evaluation": "results",
    "Summary": "results",
    "load_results": "results",
    "metric_names": "results",
    "summarize": "results",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
