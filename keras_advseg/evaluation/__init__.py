"""Evaluation below the workflow layer: attack and score, typed results, paired statistics, figures."""

from keras_advseg.config import EvalConfig
from keras_advseg.evaluation.evaluate import evaluate
from keras_advseg.evaluation.results import (
    EvalResults,
    Evaluation,
    Summary,
    load_results,
    metric_names,
    summarize,
)

__all__ = [
    "EvalConfig",
    "EvalResults",
    "Evaluation",
    "Summary",
    "evaluate",
    "load_results",
    "metric_names",
    "summarize",
]
