"""``advseg reproduce`` and ``advseg compare``: the whole study, and the paper's tables from
evaluation folders."""

from __future__ import annotations

from pathlib import Path

import click

from keras_advseg import config as cfg
from keras_advseg.cli.output import echo_ui, exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    data_option,
    out_option,
    parse_floats,
    parse_seeds,
    preset_option,
    renamed_option,
    seed_option,
    tracking_options,
)
from keras_advseg.errors import ClusterError, TrackingError, TrainingError


@click.command("compare")
@click.argument("eval_dirs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--baseline",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Evaluation folder of the undefended model: Table 1's attacks and the reference of the "
    "defense table.",
)
@out_option(
    "Output folder: tables.md, table1_attacks.csv, table_defenses.csv (with EVAL_DIRS), "
    "compare.json and fig_eps_overlay.png."
)
@click.option(
    "--eps",
    "table_eps",
    default="0,0.05,0.1",
    help="FGSM budgets of the defense table (paper: 0, 0.05, 0.1); 0 is the clean evaluation.",
)
@click.option(
    "--table1-eps",
    "attack_eps",
    type=click.FloatRange(0, 1),
    default=0.05,
    help="Budget of Table 1's attacks (each attack against no attack on the baseline).",
)
@renamed_option("--attack-eps", "--table1-eps", "attack_eps", type=click.FloatRange(0, 1))
@click.option("--title", default="Defenses", help="Title of the defense table (e.g. '3D-UNet').")
@friendly_errors
def compare_command(eval_dirs, baseline, out, table_eps, attack_eps, title):
    """Paired Wilcoxon tests of EVAL_DIRS against --baseline, Bonferroni-corrected, as the paper's tables.

    Writes tables.md (both tables in Markdown), table1_attacks.csv (no attack vs each
    attack on the baseline), table_defenses.csv (each model vs the baseline under FGSM;
    with EVAL_DIRS), compare.json (both tables with raw and corrected p and the number
    of comparisons) and fig_eps_overlay.png (Dice over the FGSM sweep, every model).
    """
    from keras_advseg.workflows.compare import run_compare

    report = run_compare(
        list(eval_dirs),
        baseline,
        out,
        table_eps=parse_floats(table_eps, "--eps"),
        attack_eps=attack_eps,
        title=title,
    )
    click.echo(report)


@click.command("reproduce")
@data_option(
    "Dataset in any supported layout; default: the MNI152 phantom, synthesised into OUT/phantom.",
    required=False,
    default=None,
)
@preset_option(
    cfg.STUDIES,
    "smoke: about 5 minutes (16^3, 2 epochs); quick: `make demo`, 32^3 on a CPU; "
    "paper: 128^3 and the paper's epochs, temperatures and budgets (a GPU job).",
)
@out_option(
    "Study folder: phantom/ (without --data), prepared/, corrupted/ (the corrupted scans), "
    "study.json, progress.json, seeds/<seed>/ (models/, evals/, corruptions/, certify/, "
    "audits/, compare3d/, compare2d/, report.md), report.md (findings per seed and pooled); "
    "with --engine ray, logs/ (each step's output, one file per step)."
)
@click.option(
    "--seeds",
    default="0",
    show_default=True,
    help="Training seeds, e.g. 0,1,2,3,4 or 0-4: every model is trained and evaluated once "
    "per seed (initialisation, augmentation order, dropout, attacks' random starts), in "
    "OUT/seeds/<seed>/. Finished seeds are skipped; adding seeds later reuses them.",
)
@seed_option(
    "Seed of the phantom and the train/test split, fixed across --seeds (one per OUT).",
    name="--data-seed",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    help="Processes: synthesis, preparation and the corrupted scans use them, and independent "
    "steps of a seed (another model's training, evaluations, certificates) run side by side "
    "in them (TensorFlow keeps about one core busy per step).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: the steps run here (--workers at a time); ray: each step is a Ray task, on a "
    "local Ray cluster or the one --ray-address names (needs keras-advseg[cluster]).",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="auto|HOST:PORT",
    help="With --engine ray: join this running cluster (auto: the one `ray start --head` "
    "started on this machine) instead of starting a local one. OUT must be on storage every "
    "node mounts at the same path.",
)
@click.option(
    "--gpus-per-step",
    type=click.FloatRange(0, 1),
    default=None,
    help="With --engine ray on a cluster with GPUs: the GPUs each training, attack or "
    "certification step asks for (default 1; 0.5 packs two small steps on one GPU; 0: CPUs "
    "only).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="With --engine ray: times a step whose worker died (killed, out of memory, node "
    "lost) is run again before the study stops.",
)
@tracking_options(None, note="advseg-reproduce-PRESET")
@friendly_errors
def reproduce_command(
    data,
    preset,
    out,
    seeds,
    data_seed,
    workers,
    engine,
    ray_address,
    gpus_per_step,
    retries,
    tracking_uri,
    experiment,
):
    """Run the whole study: data, training with every defense, attacks, statistics, report.md.

    With several --seeds, report.md states each finding per seed and pooled over the
    seeds (the pre-specified test on per-subject Dice averaged over seeds), and each
    defense's effect with a 95 % interval over seeds. Re-running skips finished steps.
    All runs go to one MLflow experiment: advseg-reproduce-PRESET unless --experiment
    is given. With --engine ray every step is a Ray task: on a local Ray cluster (every port
    on 127.0.0.1) or, with --ray-address, on a running cluster; see docs/scaling.md.
    """
    from keras_advseg.workflows.reproduce import reproduce

    cluster = None
    if engine == "ray":
        from keras_advseg.workflows.ray_engine import RayEngine

        cluster = RayEngine(ray_address, gpus_per_step, retries)
    else:
        context = click.get_current_context()
        for name in ("ray_address", "gpus_per_step", "retries"):
            if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
                raise click.UsageError(f"--{name.replace('_', '-')} needs --engine ray")
    with exit_1_on(TrainingError, TrackingError, ClusterError):
        report = reproduce(
            preset,
            out,
            data=data,
            tracking_uri=tracking_uri,
            experiment=experiment,
            seeds=parse_seeds(seeds),
            data_seed=data_seed,
            workers=workers,
            engine=cluster,
        )
    click.echo(f"report: {report}")
    echo_ui(tracking_uri, experiment or f"advseg-reproduce-{preset}")


COMMANDS = (reproduce_command, compare_command)
