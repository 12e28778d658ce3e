"""``advseg audit``: the gradient-masking checklist."""

from __future__ import annotations

import sys

import click

from keras_advseg import config as cfg
from keras_advseg.cli.output import exit_1_on, friendly_errors
from keras_advseg.cli_args import (
    count_option,
    model_and_data,
    names_option,
    parse_floats,
    reference_option,
    run_name_option,
    seed_option,
    split_option,
    subjects_option,
    tracking_options,
)
from keras_advseg.errors import TrackingError

_AUDIT = cfg.AuditConfig()  # the defaults the options show


@click.command("audit")
@model_and_data("Output folder: audit.md and audit.json.")
@reference_option(
    "An undefended model (file, run id or runs:/ URI) for the transfer check (item 5); "
    "without it item 5 is skipped."
)
@split_option("Subjects to audit.", choices=("test", "train"))
@subjects_option("Audit", _AUDIT.subjects)
@click.option(
    "--eps",
    type=click.FloatRange(0, 1, min_open=True),
    default=_AUDIT.eps,
    help="Budget of the white-box worst case, relative to each input's intensity range.",
)
@count_option("--steps", _AUDIT.steps, "Iterations of each attack; item 3 doubles them twice.")
@names_option(
    "--attacks",
    cfg.ATTACKS,
    _AUDIT.attacks,
    "Members of the worst-case ensemble, comma-separated.",
    old="--attack",
    ensemble=True,
)
@click.option(
    "--curve",
    default=",".join(f"{e:g}" for e in _AUDIT.curve),
    help="Budgets of item 2 (Dice must fall with eps); the last is the large budget.",
)
@count_option(
    "--restarts",
    _AUDIT.restarts,
    "Random restarts of item 4's APGD (masked CE): a sound worst case changes little over them.",
)
@count_option(
    "--queries",
    _AUDIT.queries,
    "Forward passes of the gradient-free random search (item 7).",
    minimum=0,
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
@run_name_option("audit")
@tracking_options()
@friendly_errors
def audit_command(
    model_ref,
    data,
    out,
    reference_ref,
    split,
    attacks,
    curve,
    fail_on_warn,
    run_name,
    tracking_uri,
    experiment,
    **settings,
):
    """Check MODEL's robustness for gradient masking: eight PASS/WARN items.

    Writes OUT/audit.md and OUT/audit.json and tags an MLflow run (and the
    model's training run) with the verdict. What each item means: the
    documentation's page Evaluation and audit, section "Auditing for gradient
    masking" (docs/evaluation.md).
    """
    from keras_advseg.workflows.audit import run_audit

    # the other options are named as AuditConfig's fields
    config = cfg.AuditConfig(
        attacks=tuple(attacks), curve=parse_floats(curve, "--curve"), **settings
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
