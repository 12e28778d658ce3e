"""``advseg audit``: the gradient-masking checklist."""

from __future__ import annotations

import sys

import click

from keras_advseg import config as cfg
from keras_advseg.cli.output import exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    RegistryChoice,
    model_and_data,
    parse_floats,
    seed_option,
    split_option,
    tracking_options,
)
from keras_advseg.errors import TrackingError

_AUDIT = cfg.AuditConfig()  # the defaults the options show


@click.command("audit")
@model_and_data("Output folder: audit.md and audit.json.")
@click.option(
    "--reference",
    "reference_ref",
    default=None,
    help="An undefended model (file, run id or runs:/ URI) for the transfer check (item 5); "
    "without it item 5 is skipped.",
)
@split_option("Subjects to audit.", choices=("test", "train"))
@click.option(
    "--subjects",
    type=click.IntRange(min=0),
    default=_AUDIT.subjects,
    help="Audit the first N subjects of the split (0: all).",
)
@click.option(
    "--eps",
    type=click.FloatRange(0, 1, min_open=True),
    default=_AUDIT.eps,
    help="Budget of the white-box worst case, relative to each input's intensity range.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=_AUDIT.steps,
    help="Iterations of each attack; item 3 doubles them twice.",
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    type=RegistryChoice(cfg.ATTACKS, ensemble=True),
    default=_AUDIT.attacks,
    help="Members of the worst-case ensemble (repeatable) [the default ensemble].",
)
@click.option(
    "--curve",
    default=",".join(f"{e:g}" for e in _AUDIT.curve),
    help="Budgets of item 2 (Dice must fall with eps); the last is the large budget.",
)
@click.option(
    "--restarts",
    type=click.IntRange(min=1),
    default=_AUDIT.restarts,
    help="Random restarts of item 4's APGD (masked CE): a sound worst case changes little "
    "over them.",
)
@click.option(
    "--queries",
    type=click.IntRange(min=0),
    default=_AUDIT.queries,
    help="Forward passes of the gradient-free random search (item 7).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1),
    default=_AUDIT.tolerance,
    help="Mean-Dice difference that counts as a change or as stronger.",
)
@click.option(
    "--relative-tolerance",
    type=click.FloatRange(0, 1),
    default=_AUDIT.relative_tolerance,
    help="Items 3-7 also ignore differences up to this share of what the white-box worst case "
    "takes off clean Dice.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 1e6, min_open=True),
    default=_AUDIT.temperature,
    help="The model's softmax temperature T (a distilled model's, as in train --temperature) "
    "for item 6.",
)
@seed_option("Seed of the random starts and the random search.", _AUDIT.seed)
@click.option(
    "--fail-on-warn", is_flag=True, help="Exit with status 1 when any item warns (for CI)."
)
@click.option("--run-name", help="MLflow run name [audit].")
@tracking_options()
@friendly_errors
def audit_command(
    model_ref,
    data,
    out,
    reference_ref,
    split,
    subjects,
    eps,
    steps,
    attacks,
    curve,
    restarts,
    queries,
    tolerance,
    relative_tolerance,
    temperature,
    seed,
    fail_on_warn,
    run_name,
    tracking_uri,
    experiment,
):
    """Check MODEL's robustness for gradient masking: eight PASS/WARN items.

    Writes OUT/audit.md and OUT/audit.json and tags an MLflow run (and the
    model's training run) with the verdict. What each item means: the
    documentation's page Evaluation and audit, section "Auditing for gradient
    masking" (docs/evaluation.md).
    """
    from keras_advseg.workflows.audit import run_audit

    config = cfg.AuditConfig(
        eps=eps,
        steps=steps,
        attacks=tuple(attacks),
        curve=parse_floats(curve, "--curve"),
        restarts=restarts,
        queries=queries,
        tolerance=tolerance,
        relative_tolerance=relative_tolerance,
        temperature=temperature,
        subjects=subjects,
        seed=seed,
    )
    with exit_1_on(TrackingError):
        document = run_audit(
            model_ref,
            data,
            out,
            config,
            reference_ref=reference_ref,
            split=split,
            tracking_uri=tracking_uri,
            experiment=experiment,
            run_name=run_name,
            progress=lambda stage: click.echo(f"audit: {stage}", err=True),
        )
    for item in document["items"]:
        click.echo(f"{item['item']} {item['verdict']:4s} {item['claim']}: {item['evidence']}")
    click.echo(f"audit {document['verdict']}: wrote {out / 'audit.md'} and {out / 'audit.json'}")
    if fail_on_warn and document["verdict"] == "WARN":
        sys.exit(1)


COMMANDS = (audit_command,)
