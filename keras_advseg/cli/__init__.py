"""The ``advseg`` command line: the ``main`` group and its families of commands.

One module per family (:mod:`~keras_advseg.cli.data`, ``train``, ``evaluate``,
``corruptions``, ``certify``, ``card``, ``audit``, ``study``, ``models``), each a thin layer
over a workflow; the options several commands share are defined once in
:mod:`keras_advseg.cli_args`. Every error caused by input (a bad file, a bad option value) is
printed as one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import os
import sys

import click

import keras_advseg
from keras_advseg import __version__
from keras_advseg.cli import (
    audit,
    card,
    certify,
    corruptions,
    data,
    evaluate,
    models,
    study,
    train,
)
from keras_advseg.cli.output import friendly_errors, one_line
from keras_advseg.cli_args import parse_floats, parse_seeds, parse_shape

__all__ = [
    "friendly_errors",
    "main",
    "one_line",
    "parse_floats",
    "parse_seeds",
    "parse_shape",
    "quiet_logs",
    "run",
]

FAMILIES = (data, train, evaluate, corruptions, certify, card, audit, study, models)
"""The modules whose ``COMMANDS`` make up ``advseg``."""

TENSORFLOW_COMMANDS = (
    "train",
    "evaluate",
    "corruptions",
    "certify",
    "card",
    "audit",
    "reproduce",
    "export",
    "import-onnx",
    "predict",
    "score",
)
"""Commands that use TensorFlow; the others (data, compare, leaderboard, card-export) start
without it."""


def quiet_logs(verbose: bool, import_tensorflow: bool = True) -> None:
    """Keeps TensorFlow's C++ log and MLflow's notices out of the output unless ``verbose``.

    TensorFlow prints several lines that are not errors (CUDA probing on a CPU
    machine, "remapper failed", oneDNN notices) while it is imported and when
    it compiles a graph; they would bury a real error. Quiet: its C++ log level
    is 3 (unless ``TF_CPP_MIN_LOG_LEVEL`` is set) and the import itself writes
    nothing to standard error. MLflow logs warnings and errors only.
    """
    import logging

    if verbose:
        if not keras_advseg.TF_LOG_LEVEL_SET_BY_USER:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
            keras_advseg.show_tensorflow_log()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # MLflow sets its loggers' level from this variable when it is imported, later
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if not import_tensorflow:
        return
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow  # noqa: F401  (imported here, silently, once)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="advseg")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Show TensorFlow's C++ log and MLflow's notices (hidden by default so that errors stand "
    "out).",
)
@click.pass_context
def main(ctx: click.Context, verbose: bool):
    """Measure and improve the adversarial robustness of brain-tumour segmentation networks.

    Reproduces Liu et al. 2021, "Robustifying Deep Networks for Medical Image
    Segmentation", on BraTS-style MRI (four modalities) or on the built-in
    MNI152 phantom.
    """
    if not ctx.resilient_parsing and ctx.invoked_subcommand is not None:
        from keras_advseg.tracking import bound_http_waits

        bound_http_waits()  # a tracking server that fails every call stops a command in seconds
        needs = ctx.invoked_subcommand in TENSORFLOW_COMMANDS
        if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
            needs = False
        quiet_logs(verbose, import_tensorflow=needs)


for _family in FAMILIES:
    for _command in _family.COMMANDS:
        main.add_command(_command)


def run() -> None:
    """The console script: ``main`` with SIGTERM handled like Ctrl-C.

    ``timeout``, Slurm and Kubernetes stop a job with SIGTERM. Raised as
    ``KeyboardInterrupt``, it ends the MLflow run as KILLED, removes the temporaries of
    the files being written, and leaves a checkpoint that ``--resume`` continues exactly.
    Both signals are recorded (:class:`~keras_advseg.interrupts.SignalRecord`): an error a
    library raised in place of the interrupt still ends the command as interrupted.
    """
    from keras_advseg.interrupts import SignalRecord

    with SignalRecord():
        main()
