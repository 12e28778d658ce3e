"""The commands a card runs, each into its own folder, at the card's plan: ``advseg
evaluate`` (clean, attacked, VAFA and min_eps), ``corruptions``, ``certify`` and
``audit``. Every number on the card is one of these commands' own."""

from __future__ import annotations

from keras_advseg.config import EPS_CURVE, EvalConfig


def evaluate(model, data, folder, plan, seed, reference_ref, common) -> None:
    """FGSM at the plan's budgets and on the doubling grid, VAFA, and the worst case."""
    from keras_advseg.workflows.evaluate import run_evaluation

    config = EvalConfig(
        attacks=("fgsm", "vafa", "worst"),
        eps=plan.eps,
        iterative_eps=plan.eps[:1],
        steps=plan.steps,
        eps_sweep=EPS_CURVE,
        seed=seed,
        ensemble=plan.ensemble,
        worst_steps=plan.steps,
        worst_weighs=("fgsm",),
        vafa_setting=plan.vafa,
    )
    # the card reads the clean row's native Dice and HD95
    _quietly(run_evaluation, "adversarial", model, data, folder, common, config, native="clean")


def corruptions(model, data, folder, plan, seed, reference_ref, common) -> None:
    """The plan's corruptions at its severities (mCE against ``reference_ref``)."""
    from keras_advseg.workflows.corruptions import run_corruption_evaluation

    _quietly(
        run_corruption_evaluation,
        "corruptions",
        model,
        data,
        folder,
        common,
        corruptions=plan.corruptions,
        severities=plan.severities,
        seed=seed,
        reference_ref=reference_ref,
    )


def certify(model, data, folder, plan, seed, reference_ref, common) -> None:
    """Randomized smoothing at the plan's sigmas, on its subjects."""
    from keras_advseg.certification import CertifyConfig
    from keras_advseg.workflows.certify import run_certification

    config = CertifyConfig(
        sigmas=plan.sigmas, n=plan.n, n0=plan.n0, seed=seed, subjects=plan.subjects
    )
    _quietly(run_certification, "certified", model, data, folder, common, config)


def audit(model, data, folder, plan, seed, reference_ref, common) -> None:
    """The plan's gradient-masking audit (transfer from ``reference_ref``)."""
    from keras_advseg.workflows.audit import run_audit

    config = plan.audit_config(seed)
    _quietly(run_audit, "audit", model, data, folder, common, config, reference_ref=reference_ref)


def _quietly(workflow, axis, model, data, folder, common, *config, **options) -> None:
    """Runs ``workflow(model, data, folder, *config, **options)`` as the MLflow run
    ``card-<axis>``, without progress bars (``common``: the tracking store and experiment)."""
    workflow(
        model, data, folder, *config, run_name=f"card-{axis}", progress=False, **options, **common
    )
