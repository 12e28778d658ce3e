"""``advseg evaluate``: attack a model and score it per subject.

The spelling of the last release, ``advseg evaluate --corruptions ...``, still runs the
corruption benchmark (:mod:`keras_advseg.cli.corruptions`) for one release, with a notice.
"""

from __future__ import annotations

import click

from keras_advseg import config as cfg
from keras_advseg.cli.corruptions import OLD_SPELLING, corruption_options, corruptions_command
from keras_advseg.cli.output import echo_summary, exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    count_option,
    model_and_data,
    names_option,
    parse_floats,
    renamed_notice,
    run_name_option,
    seed_option,
    split_option,
    tracking_options,
)
from keras_advseg.errors import ClusterError, TrackingError

_EVAL = cfg.EvalConfig()  # the defaults the options show

ATTACK_OPTIONS = (
    "attacks",
    "deprecated_attacks",
    "eps",
    "eps_sweep",
    "eps_curve",
    "iterations_sweep",
    "attack_temperature",
    "transfer_ref",
    "restarts",
    "vafa_setting",
    "steps",
    "strategy",
)
"""The options that only an attack evaluation reads."""


@click.command("evaluate")
@model_and_data(
    "Output folder: per_subject.csv and summary.json; iterations.csv and fig_iterations.png "
    "with --iterations-sweep; fig_example.png; fig_eps.png with --eps-sweep; fig_eps_curve.png "
    "with --eps-curve."
)
@split_option("Subjects to evaluate.")
@names_option(
    "--attacks",
    cfg.ATTACKS,
    _EVAL.attacks,
    "Attacks, comma-separated: targeted-ifgsm is the paper's targeted i-FGSM (every voxel "
    "towards label 1), pgd-dice PGD on soft Dice, worst the per-subject worst case over the "
    "ensemble and FGSM.",
    old="--attack",
)
@click.option(
    "--eps",
    default="0.05",
    show_default=True,
    help="Attack budgets, relative to each input's intensity range (max - min): one value or a "
    "list (0,0.05,0.1).",
)
@count_option(
    "--steps",
    _EVAL.steps,
    "Iterations of every iterative attack (i-FGSM, targeted i-FGSM, PGD, APGD, ...).",
    show_default=True,
)
@click.option(
    "--eps-sweep",
    default=None,
    help="FGSM budgets swept from ONE gradient, START:STOP:STEP or a list; the paper's is "
    "0:0.01:0.001.",
)
@click.option(
    "--eps-curve",
    is_flag=True,
    help="Also run every attack at eps 0.0125, 0.025, ..., 0.8 (doubling): Dice down to 0. A "
    "subject whose Dice reached 0 keeps that input for the larger budgets.",
)
@click.option(
    "--iterations-sweep",
    is_flag=True,
    help="Record Dice and PSNR/SSIM/RMSE after every i-FGSM and targeted i-FGSM iteration (one "
    "run each).",
)
@click.option(
    "--attack-temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=_EVAL.attack_temperature,
    help="Softmax temperature of the attack loss; T > 1 attacks distilled models at the logit "
    "level.",
)
@click.option(
    "--transfer-from",
    "transfer_ref",
    default=None,
    help="Craft the attacks on this other model (file, run id or runs:/ URI) and apply them "
    "(transfer).",
)
@count_option(
    "--restarts",
    _EVAL.restarts,
    "Random restarts of pgd-dice: per subject the restart with the highest loss is kept.",
    show_default=True,
)
@click.option(
    "--vafa-setting",
    type=click.Choice(cfg.VAFA_SETTING_NAMES),
    default=_EVAL.vafa_setting,
    show_default=True,
    help="VAFA's setting (--attacks vafa): light (8^3 blocks, q_max 10, --steps steps, Dice) or "
    "paper (Hanif et al.: 32^3 blocks, q_max 20, 20 steps, Dice minus SSIM).",
)
@seed_option("Seed of the attacks' random starts.", _EVAL.seed)
@run_name_option("eval-ATTACKS")
@click.option(
    "--native",
    is_flag=True,
    help="Also score Dice and HD95 (mm) in each scan's own space: the perturbation is made in model "
    "space and the prediction mapped back (needs the raw dataset the cache was prepared from).",
)
@click.option(
    "--strategy",
    type=click.Choice(cfg.STRATEGIES),
    default="default",
    show_default=True,
    help="mirrored: subjects spread over the local devices; multiworker: also over the machines "
    "in TF_CONFIG (run the same command on each; the chief merges and writes the rows).",
)
@corruption_options(hidden=True)
@tracking_options()
@friendly_errors
def evaluate_command(
    model_ref,
    data,
    out,
    split,
    attacks,
    eps,
    steps,
    eps_sweep,
    eps_curve,
    iterations_sweep,
    attack_temperature,
    transfer_ref,
    restarts,
    vafa_setting,
    seed,
    run_name,
    native,
    strategy,
    tracking_uri,
    experiment,
    **old_spelling,
):
    """Attack MODEL (a .keras file, an MLflow run id or runs:/ URI) and score it per subject.

    Corruptions (simulated MRI artifacts and operator errors) are scored by advseg corruptions.
    """
    from keras_advseg.workflows.evaluate import run_evaluation, summary_lines

    # what the attack evaluation and the old spelling's corruption benchmark both take
    shared = dict(
        model_ref=model_ref,
        data=data,
        out=out,
        split=split,
        run_name=run_name,
        native=native,
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    given = {name: value for name, value in old_spelling.items() if value is not None}
    if given:
        _run_old_corruptions_spelling(given, seed=seed, **shared)
        return
    config = cfg.EvalConfig(
        attacks=tuple(attacks),
        eps=parse_floats(eps, "--eps") or (0.05,),
        steps=steps,
        eps_sweep=parse_floats(eps_sweep, "--eps-sweep"),
        eps_curve=eps_curve,
        iterations_sweep=iterations_sweep,
        attack_temperature=attack_temperature,
        seed=seed,
        restarts=restarts,
        vafa_setting=vafa_setting,
    )
    with exit_1_on(TrackingError, ClusterError):
        summary = run_evaluation(
            config=config, transfer_ref=transfer_ref, strategy=strategy, **shared
        )
    echo_summary(summary_lines(summary, out), tracking_uri, experiment)


def _run_old_corruptions_spelling(given: dict, **shared) -> None:
    """``advseg evaluate --corruptions ...``: a notice, then ``advseg corruptions`` with the
    same options.

    Raises:
        click.UsageError: a benchmark option without ``--corruptions``, or with an attack option.
    """
    context = click.get_current_context()

    def spelled(name: str) -> str:
        return next(p.opts[0] for p in context.command.params if p.name == name)

    if "corruptions" not in given:
        raise click.UsageError(f"{spelled(next(iter(given)))} needs --corruptions")
    source = click.core.ParameterSource.COMMANDLINE
    clash = [name for name in ATTACK_OPTIONS if context.get_parameter_source(name) == source]
    if clash:
        raise click.UsageError(
            f"--corruptions scores corruptions, not attacks; drop {spelled(clash[0])} "
            "(advseg corruptions scores corruptions, advseg evaluate attacks)"
        )
    renamed_notice(OLD_SPELLING, "advseg corruptions")
    context.invoke(corruptions_command, **shared, **given)


COMMANDS = (evaluate_command,)
