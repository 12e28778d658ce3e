"""Evaluation below the workflow layer: attack and score, typed results, paired statistics, figures.

The names are imported on first use, so that ``evaluation.results``,
``evaluation.statistics`` and ``evaluation.figures`` (``advseg compare``) do not
start TensorFlow.
"""

from __future__ import annotations

from keras_advseg._lazy import by_module, lazy_exports

_EXPORTS = by_module(
    {
        "keras_advseg.config": ("EvalConfig",),
        "robustness": ("evaluate",),
        "results": (
            "EvalResults",
            "Evaluation",
            "Summary",
            "load_results",
            "metric_names",
            "summarize",
        ),
    }
)

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
