"""One robustness card per model (``advseg card``): clean, attacked, corrupted, certified, audited.

Each axis is one of the toolkit's own commands run into its folder under ``OUT`` (``clean and
adversarial/``, ``artifacts/``, ``certified/``, ``audit/``), so every number on the card is the
number that command writes; an axis already there with the same settings, or logged by a card
run in the tracking store with them, is reused. ``advseg reproduce`` builds its cards from the
study's own folders (:func:`write_study_card`). The card
is ``card.json`` (schema :data:`CARD_SCHEMA`, version :data:`CARD_VERSION`), ``card.md`` and a
self-contained ``card.html``, logged with the headline metrics to an MLflow run nested under
the model's training run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from keras_advseg.config import EPS_CURVE, REGIONS, AuditConfig, EvalConfig
from keras_advseg.corruptions.registry import CORRUPTIONS
from keras_advseg.errors import FileFormatError, InputError
from keras_advseg.io import ensure_writable_folder, write_text_atomic

CARD_SCHEMA = "keras-advseg/robustness-card"
CARD_VERSION = 2
"""2: per-subject corruption draws, sigma in standardised units, region certificates, the
censored min_eps median, the corrupted-scan mean, flags, data, commit and date. A version-1 card
is refused in one line: its numbers mean something else."""
SECTIONS = ("clean", "adversarial", "artifacts", "certified", "audit")


@dataclass(frozen=True)
class CardBudget:
    """What a card runs: its attacks' steps, severities, samples and subjects.

    Attributes:
        name: ``quick``, ``standard`` or ``full``.
        subjects: Test subjects of the attacks, the certificate and the audit (0: all); the
            artifacts and clean scores use every test subject.
        eps: The paper's budgets for FGSM (the worst case runs at the first).
        steps: Iterations of each worst-case attack and of VAFA.
        ensemble: The worst case's attacks.
        corruptions, severities: The artifact benchmark.
        sigmas, n, n0: The certificates.
        audit_steps: The audit's steps (doubled twice for its item 3).
        audit_curve, audit_restarts, audit_queries: The audit's item 2 budgets, item 4 restarts
            and item 7 queries.
        audit_subjects: Subjects of the audit (None: ``subjects``).
        vafa: VAFA's named setting (:data:`~keras_advseg.config.VAFA_SETTINGS`): ``light`` at
            ``quick``, the paper's (32^3 blocks, q_max 20, 20 steps, Dice minus SSIM) at
            ``standard`` and ``full``.
    """

    name: str
    subjects: int
    eps: tuple[float, ...]
    steps: int
    ensemble: tuple[str, ...]
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    sigmas: tuple[float, ...]
    n: int
    n0: int
    audit_steps: int
    audit_curve: tuple[float, ...] = (0.025, 0.1, 0.4)
    audit_restarts: int = 2
    audit_queries: int = 20
    audit_subjects: int | None = None
    vafa: str = "light"

    @property
    def audited(self) -> int:
        """Subjects of the audit (0: all)."""
        return self.subjects if self.audit_subjects is None else self.audit_subjects

    def audit_config(self, seed: int, temperature: float = 1.0) -> AuditConfig:
        """The audit this budget runs."""
        return AuditConfig(
            steps=self.audit_steps,
            attacks=self.ensemble,
            curve=self.audit_curve,
            curve_attacks=("pgd-dice",),
            restarts=self.audit_restarts,
            queries=self.audit_queries,
            subjects=self.audited,
            temperature=temperature,
            seed=seed,
        )

    def key(self, axis: str, **context) -> str:
        """A hash of what ``axis`` depends on (its settings, and ``context``: the model's digest,
        the seed, the reference): an axis run with anything else is run again."""
        fields = {
            "adversarial": ("name", "eps", "steps", "ensemble", "vafa"),
            "artifacts": ("name", "corruptions", "severities"),
            "certified": ("name", "sigmas", "n", "n0", "subjects"),
            "audit": (
                "name",
                "audit_steps",
                "audit_curve",
                "audit_restarts",
                "audit_queries",
                "audited",
                "ensemble",
            ),
        }[axis]
        value = [axis, AXIS_VERSIONS[axis], {f: getattr(self, f) for f in fields}, context]
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


AXIS_VERSIONS = {"adversarial": 2, "artifacts": 2, "certified": 2, "audit": 2}
"""Bumped when an axis's definition changes, so that a card never reuses an axis computed under
the old one: 2 = per-subject corruption draws, sigma in standardised units with region
certificates, the audit's eighth item, VAFA's named settings and lesion-wise scores."""


BUDGETS = {
    "quick": CardBudget(
        "quick",
        2,
        (0.05, 0.1),
        5,
        ("segpgd", "pgd-dice", "pgd-softened"),
        ("motion", "bias-field", "missing-sequence"),
        (3,),
        (0.5,),
        100,
        10,
        5,
    ),
    "standard": CardBudget(
        "standard",
        0,
        (0.05, 0.1),
        10,
        ("apgd-masked-ce", "segpgd", "pgd-dice", "pgd-softened"),
        CORRUPTIONS.names(),
        (1, 3, 5),
        (0.25, 0.5),
        100,
        10,
        10,
        vafa="paper",
    ),
    "full": CardBudget(
        "full",
        0,
        (0.05, 0.1),
        20,
        (
            "apgd-ce",
            "apgd-dice",
            "apgd-masked-ce",
            "apgd-balanced-masked-ce",
            "segpgd",
            "cospgd",
            "pgd-dice",
            "pgd-softened",
        ),
        CORRUPTIONS.names(),
        (1, 2, 3, 4, 5),
        (0.25, 0.5, 1.0),
        1000,
        10,
        20,
        audit_curve=AuditConfig().curve,
        audit_restarts=AuditConfig().restarts,
        audit_queries=AuditConfig().queries,
        vafa="paper",
    ),
}


def claims(budget: CardBudget) -> dict[str, str]:
    """What a card of ``budget`` can and cannot claim, axis by axis (printed on the card)."""
    return {
        "adversarial": (
            f"Upper bounds: the Dice under the strongest of {', '.join(budget.ensemble)} "
            f"({budget.steps} steps each) and FGSM; a stronger attack may find lower. min_eps is "
            "FGSM's smallest breaking budget on the grid it ran (min_eps.grid): an upper bound "
            "on the smallest budget that breaks the model."
        ),
        "vafa": "Outside the l-infinity threat model: a quantisation of block-DCT coefficients; "
        "read its Dice with its PSNR/SSIM.",
        "artifacts": (
            f"Measured, not bounded: {', '.join(budget.corruptions)} at severity "
            f"{', '.join(map(str, budget.severities))}, one draw per subject; other artifacts "
            "and draws may differ."
        ),
        "certified": (
            f"Guarantees for the smoothed model (not the network), at family-wise error 0.001 "
            f"per volume, in l2 radius sigma * 0.674, sigma {', '.join(map(str, budget.sigmas))}"
            f" in standardised units (tissue standard deviations of each sequence), n = "
            f"{budget.n}; class-wise (SegCertify, Holm over the voxels) and per region (WT, TC, ET "
            "each certified as its own region, Holm over voxels x regions), each family at "
            "0.001; the l-infinity budget they cover is tiny (see linf)."
        ),
        "audit": "A PASS means no gradient-masking symptom was found at this budget, not that "
        "there is none.",
        "subjects": _subjects_claim(budget),
    }


def _subjects_claim(budget: CardBudget) -> str:
    def first(n):
        return "every test subject" if n == 0 else f"the first {n}"

    if budget.subjects == 0 and budget.audited == 0:
        return "every test subject"
    return (
        f"every test subject for the clean, attacked and corrupted scores; "
        f"{first(budget.subjects)} for the certificates and {first(budget.audited)} for the audit"
    )


def run_card(
    model_ref: str,
    data,
    out,
    *,
    budget: str = "quick",
    reference_ref: str | None = None,
    preprocessing_json=None,
    seed: int = 0,
    tracking_uri: str,
    experiment: str,
    say=print,
) -> dict:
    """Runs (or reuses) every axis and writes ``card.json``, ``card.md`` and ``card.html``.

    Args:
        model_ref: A ``.keras`` file, MLflow run id or ``runs:/`` URI.
        data: The raw dataset (its test split; the artifacts need the raw scans).
        out: The card's folder.
        budget: A key of :data:`BUDGETS`.
        reference_ref: An undefended model: the audit's transfer check and the artifacts' mCE.
        preprocessing_json: For a model trained elsewhere: its preprocessing as JSON
            (:class:`~keras_advseg.inference.Preprocessing`'s form); the card runs a copy of the
            model that carries it.
        seed: Seed of the attacks, corruptions and noise.
        tracking_uri, experiment: MLflow.
        say: Where progress lines go.

    Returns:
        The card (``card.json``'s content).

    Raises:
        InputError / DataError: bad references, data, budget or preprocessing.
    """
    from keras_advseg.tracking import check_reachable, resolve_model_path

    if budget not in BUDGETS:
        raise InputError(f"budget must be one of {sorted(BUDGETS)}. Received: {budget!r}")
    plan = BUDGETS[budget]
    out = ensure_writable_folder(out)
    check_reachable(tracking_uri)
    model_path = resolve_model_path(model_ref, tracking_uri)
    model_path = _with_preprocessing(model_path, preprocessing_json, out)
    model = str(model_path)
    data = _prepared_for(model_path, data, out)
    common = dict(tracking_uri=tracking_uri, experiment=experiment)
    started = time.perf_counter()
    # what every axis depends on besides its settings: the model's bytes, the seed, and the
    # data (its raw source and split), not the folders, so that another --out can reuse it
    context = {"model": _digest(model_path), "seed": seed, "data": _data_identity(data)}
    with_reference = {
        **context,
        "reference": _digest(Path(resolve_model_path(reference_ref, tracking_uri)))
        if reference_ref
        else None,
    }
    runners = {
        "adversarial": (lambda f: _evaluate(model, data, f, plan, seed, common), context),
        "artifacts": (
            lambda f: _artifacts(model, data, f, plan, seed, reference_ref, common),
            with_reference,
        ),
        "certified": (lambda f: _certify(model, data, f, plan, seed, common), context),
        "audit": (
            lambda f: _audit(model, data, f, plan, seed, reference_ref, common),
            with_reference,
        ),
    }
    keys, origin = {}, {}
    for axis, (run, axis_context) in runners.items():
        keys[axis] = plan.key(axis, **axis_context)
        origin[axis] = _axis(out / AXIS_FOLDERS[axis], axis, keys[axis], run, tracking_uri, say)
    card = build_card(out, plan, model_ref, reference_ref, seed, model_path)
    card["seconds"] = round(time.perf_counter() - started, 1)
    card["reused"] = sorted(a for a, o in origin.items() if o != "run")
    validate_card(card)
    logged = {a: keys[a] for a, o in origin.items() if not o.startswith("mlflow:")}
    publish_card(
        card,
        out,
        model_ref=model_ref,
        model_path=model_path,
        tracking_uri=tracking_uri,
        experiment=experiment,
        axes=logged,
    )
    return card


def publish_card(
    card: dict, out: Path, *, model_ref, model_path, tracking_uri, experiment, axes=None
) -> list[Path]:
    """Writes ``card.json``, ``card.md`` and ``card.html`` into ``out`` and logs them with the
    headline metrics to an MLflow run nested under the model's training run (where the store
    has it).

    Args:
        axes: ``{axis: key}`` of the axes whose files the run also logs (under ``axes/<axis>``)
            and tags (``card.axis.<axis>``), for a card elsewhere to reuse.

    Returns:
        The written files.
    """
    import mlflow
    from keras_advseg.tracking import tracked_run
    from keras_advseg.workflows.evaluate import lineage

    budget = card["budget"]["name"]
    _, lineage_tags = lineage(model_ref, model_path, tracking_uri)
    tags = {"card": "true", "card_budget": budget, **lineage_tags}
    written = [
        write_text_atomic(out / "card.json", json.dumps(card, indent=2)),
        write_text_atomic(out / "card.md", card_markdown(card)),
        write_text_atomic(out / "card.html", card_html(card, out)),
    ]
    with tracked_run(tracking_uri, experiment, run_name=f"card-{budget}", tags=tags):
        mlflow.log_params({"model": str(model_ref), "budget": budget, "seed": card["seed"]})
        mlflow.log_metrics(headline_metrics(card))
        for path in written:
            mlflow.log_artifact(str(path))
        for axis, key in (axes or {}).items():
            # each axis's files, and a tag with its key: what a card elsewhere reuses
            mlflow.log_artifacts(str(out / AXIS_FOLDERS[axis]), artifact_path=f"axes/{axis}")
            mlflow.set_tag(f"card.axis.{axis}", key)
    return written


def study_budget(study, preset: str) -> CardBudget:
    """What a card of an ``advseg reproduce`` study measured: the preset's worst case, artifacts,
    certificates and audit (:class:`~keras_advseg.config.Study`)."""
    audit = study.audit
    return CardBudget(
        f"study-{preset}",
        study.certify_subjects,
        tuple(e for e in study.table_eps if e > 0),
        study.worst_steps or study.steps,
        tuple(study.ensemble),
        tuple(study.corruptions),
        tuple(study.corruption_severities),
        tuple(study.certify_sigmas),
        study.certify_n,
        study.certify_n0,
        audit.steps,
        audit_curve=tuple(audit.curve),
        audit_restarts=audit.restarts,
        audit_queries=audit.queries,
        audit_subjects=audit.subjects,
        vafa=study.vafa_setting,
    )


def write_study_card(
    out,
    folders: dict,
    plan: CardBudget,
    model_path,
    *,
    reference_ref,
    seed,
    tracking_uri,
    experiment,
) -> dict:
    """A card from axes already measured elsewhere (a study's folders): each folder is copied into
    the card's own (so that the card folder stands alone), then the card is built, written and
    logged like ``advseg card``'s.

    Args:
        folders: ``{axis: folder}`` for every axis of :data:`AXIS_FOLDERS`.

    Returns:
        The card.
    """
    import shutil

    started = time.perf_counter()
    out = ensure_writable_folder(out)
    for axis, folder in folders.items():
        shutil.copytree(folder, out / AXIS_FOLDERS[axis], dirs_exist_ok=True)
    card = build_card(out, plan, str(model_path), reference_ref, seed, model_path)
    card["seconds"] = round(time.perf_counter() - started, 1)
    card["reused"] = sorted(folders)
    validate_card(card)
    publish_card(
        card,
        out,
        model_ref=str(model_path),
        model_path=Path(model_path),
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    return card


AXIS_FOLDERS = {
    "adversarial": "adversarial",
    "artifacts": "artifacts",
    "certified": "certified",
    "audit": "audit",
}
"""Each axis's folder in a card's ``OUT``."""


def _data_identity(prepared_dir) -> str:
    """The raw dataset a prepared cache came from and its split and preparation (its hash)."""
    from keras_advseg.data.prepare import load_prepared

    prepared = load_prepared(prepared_dir)
    source = str(Path(prepared.source).resolve()) if prepared.source else ""
    return f"{source}|{prepared.data_hash}"


def _with_preprocessing(model_path: Path, preprocessing_json, out: Path) -> Path:
    """The model to card: itself, or (``--preprocessing``) a copy that carries the given
    preprocessing; a model with neither is refused."""
    from keras_advseg.export import load_model, load_preprocessing, save_model
    from keras_advseg.inference import Preprocessing

    if preprocessing_json is None:
        load_preprocessing(model_path)  # refuses, in one line, a model saved without it
        return model_path
    try:
        value = json.loads(Path(preprocessing_json).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{preprocessing_json}: not a readable JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{preprocessing_json}: expected a JSON object")
    preprocessing = Preprocessing.from_json(value, preprocessing_json)
    copy = out / "model.keras"
    save_model(load_model(model_path), copy, preprocessing)
    return copy


def _prepared_for(model_path: Path, data, out: Path) -> Path:
    """A raw dataset prepared as the model's stored preprocessing says (its size, N4, margin and
    normalisation; the split and the global statistics are the dataset's own), into
    ``OUT/prepared``; a prepared cache as it is."""
    from keras_advseg.data.prepare import PrepareConfig, prepare_dataset
    from keras_advseg.export import load_preprocessing

    data = Path(data)
    if (data / "prepared.json").is_file():
        return data
    stored = load_preprocessing(model_path)
    config = PrepareConfig(
        shape=stored.shape,
        n4=stored.n4,
        n4_shrink=stored.n4_shrink,
        margin=stored.margin,
        normalization=stored.normalization,
    )
    prepare_dataset(data, out / "prepared", config, progress=False)
    return out / "prepared"


def _digest(path: Path) -> str:
    """The SHA-256 of a model file (an axis of another model is never reused)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _axis(folder: Path, axis: str, key: str, run, tracking_uri: str, say) -> str:
    """Makes ``folder`` hold ``axis`` computed with ``key``: reused when its stamp
    (``card_axis.json``) has the key, else downloaded from the card run in the tracking store
    that logged the axis with this key, else ``run(folder)``.

    Returns:
        ``"folder"``, ``"mlflow:<run id>"`` or ``"run"``: where the axis came from.
    """
    stamp = folder / "card_axis.json"
    try:
        done = json.loads(stamp.read_text()).get("key") == key
    except (OSError, ValueError, AttributeError):
        done = False
    if done:
        say(f"{axis}: reused {folder}")
        return "folder"
    run_id = _download_axis(folder, axis, key, tracking_uri)
    if run_id is not None:
        say(f"{axis}: reused from MLflow run {run_id}")
        origin = f"mlflow:{run_id}"
    else:
        say(f"{axis}: running")
        run(folder)
        origin = "run"
    write_text_atomic(stamp, json.dumps({"axis": axis, "key": key}))
    return origin


def _download_axis(folder: Path, axis: str, key: str, tracking_uri: str) -> str | None:
    """Copies into ``folder`` the axis files of the newest finished card run tagged with ``key``
    (its files are untrusted input: the card reads them as it reads its own); None when the
    store has none."""
    import shutil
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`card.axis.{axis}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{axis}-", dir=folder.parent))
    try:
        downloaded = client.download_artifacts(run_id, f"axes/{axis}", str(staging))
        shutil.copytree(downloaded, folder, dirs_exist_ok=True)
    except Exception:  # the run's artifacts are gone or unreadable: compute the axis instead
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_id


def _evaluate(model, data, folder, plan: CardBudget, seed, common):
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
    run_evaluation(
        model,
        data,
        folder,
        config,
        native="clean",  # the card reads the clean row's native Dice and HD95
        run_name="card-adversarial",
        progress=False,
        **common,
    )


def _artifacts(model, data, folder, plan, seed, reference_ref, common):
    from keras_advseg.workflows.corruptions import run_corruption_evaluation

    run_corruption_evaluation(
        model,
        data,
        folder,
        corruptions=plan.corruptions,
        severities=plan.severities,
        seed=seed,
        reference_ref=reference_ref,
        run_name="card-artifacts",
        progress=False,
        **common,
    )


def _certify(model, data, folder, plan, seed, common):
    from keras_advseg.workflows.certify import run_certification

    run_certification(
        model,
        data,
        folder,
        sigmas=plan.sigmas,
        n=plan.n,
        n0=plan.n0,
        seed=seed,
        subjects=plan.subjects,
        run_name="card-certified",
        progress=False,
        **common,
    )


def _audit(model, data, folder, plan: CardBudget, seed, reference_ref, common):
    from keras_advseg.workflows.audit import run_audit

    run_audit(
        model,
        data,
        folder,
        plan.audit_config(seed),
        reference_ref=reference_ref,
        run_name="card-audit",
        **common,
    )


def build_card(
    out: Path, plan: CardBudget, model_ref, reference_ref, seed, model_path=None
) -> dict:
    """``card.json``'s content from the axes' folders (their files are untrusted input);
    ``model_path``: the carded model's file (for its input grid).

    Raises:
        FileFormatError: an axis's file is missing or malformed.
    """
    from keras_advseg import __version__
    from keras_advseg.evaluation.results import load_results

    evaluation = load_results(out / "adversarial")
    summary = evaluation.summary
    if summary is None:
        raise FileFormatError(f"{out / 'adversarial'}: no summary.json")

    def regions(entry, prefix="dice"):
        return {r: _number(entry[f"{prefix}_{r}"]["mean"]) for r in REGIONS}

    clean = {
        "n_subjects": summary.n_subjects,
        "dice": regions(summary.clean),
        "native_dice": regions(summary.clean, "native_dice"),
        "native_hd95_mm": regions(summary.clean, "native_hd95"),
    }
    if "lesion_dice_wt" in summary.clean:  # BraTS 2023's lesion-wise scores (model space)
        clean["lesion_dice"] = regions(summary.clean, "lesion_dice")
        clean["lesion_hd95_mm"] = regions(summary.clean, "lesion_hd95")
    attacks = summary.attacks
    adversarial = {
        "fgsm": {f"{e:g}": regions(attacks["fgsm"][e]) for e in plan.eps},
        "worst": {f"{e:g}": regions(attacks["worst"][e]) for e in plan.eps[:1]},
        "vafa": {
            "setting": plan.vafa,
            "label": vafa_label(plan, input_grid(model_path) if model_path else None),
            "dice": regions(attacks["vafa"][plan.eps[0]]),
            "psnr": _number(attacks["vafa"][plan.eps[0]]["psnr"]["mean"]),
            "ssim": _number(attacks["vafa"][plan.eps[0]]["ssim"]["mean"]),
        },
        "min_eps": min_eps(evaluation),
    }
    artifacts_summary = _read_json(out / "artifacts" / "corruption_summary.json")
    scores = artifacts_summary["scores"]
    from keras_advseg.workflows.report import corrupted_means

    by_subject = corrupted_means(out / "artifacts" / "corruptions.csv")
    artifacts = {
        "corruptions": artifacts_summary["corruptions"],
        "severities": artifacts_summary["severities"],
        # what the leaderboard shows and tests: each subject's Dice averaged over its
        # corrupted scans (the clean scan not counted), then over subjects
        "corrupted_dice": {
            r: float(np.mean([v[f"dice_{r}"] for v in by_subject.values()])) if by_subject else None
            for r in REGIONS
        },
        **{
            k: {r: _number(scores[k][r]) for r in REGIONS}
            for k in ("clean", "overall", "degradation", "mrr", "mce")
        },
        "worst": {r: scores["worst"][r] for r in REGIONS},
    }
    certify_summary = _read_json(out / "certified" / "certify_summary.json")
    settings = certify_summary.get("settings") or {}
    if not str(settings.get("sigma_unit") or "").startswith("standardised"):
        raise FileFormatError(
            f"{out / 'certified' / 'certify_summary.json'}: sigma in another unit (certified "
            "before sigma was defined in standardised units); certify again"
        )
    certified = {
        sigma: {
            "sigma_unit": "standardised",
            "certified_dice": {r: _number(m[f"certified_dice_{r}"]) for r in REGIONS},
            "region_certified_dice": {
                r: _number(m.get(f"region_certified_dice_{r}")) for r in REGIONS
            },
            "smoothed_dice": {r: _number(m[f"smoothed_dice_{r}"]) for r in REGIONS},
            "abstain_rate_brain": _number(m["abstain_rate_brain"]),
            # the class-wise certificate's abstentions inside each reference region
            "abstain_rate_region": {r: _number(m.get(f"abstain_rate_{r}")) for r in REGIONS},
            "radius": _number(m["radius"]),
            "radius_raw": {
                k: _number(m.get(f"radius_raw_{k}")) for k in ("t1", "t1gd", "t2", "flair")
            },
            "linf": _number(m["linf"]),
        }
        for sigma, m in certify_summary["sigmas"].items()
    }
    audit_document = _read_json(out / "audit" / "audit.json")
    audit = {
        "verdict": audit_document["verdict"],
        "items": [
            {"number": i.get("item"), "claim": i.get("claim"), "verdict": i.get("verdict")}
            for i in audit_document.get("items", [])
        ],
    }
    adversarial["audit_lower"] = audit_found_lower(audit_document.get("items", []))
    return {
        "schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "model": str(model_ref),
        "reference": str(reference_ref) if reference_ref else None,
        "data_hash": artifacts_summary.get("data_hash"),
        "data": data_description(artifacts_summary),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": _commit(),
        "flags": card_flags(clean["dice"]),
        "budget": asdict(plan),
        "seed": seed,
        "claims": claims(plan),
        "keras_advseg": __version__,
        "clean": clean,
        "adversarial": adversarial,
        "artifacts": artifacts,
        "certified": certified,
        "audit": audit,
    }


def min_eps(evaluation) -> dict:
    """Each subject's smallest FGSM budget that takes its mean Dice to half its clean mean Dice or
    below, on the grid of budgets the evaluation ran FGSM at (``advseg card``: the doubling grid
    :data:`EPS_CURVE`); None when none of the grid does."""
    budgets = {}
    for attack in ("fgsm", "fgsm_sweep"):
        for (name, eps), rows in evaluation.values.items():
            if name == attack and eps > 0:
                budgets.setdefault(round(eps, 6), {}).update(rows)
    grid = sorted(budgets)
    found = {}
    clean = evaluation.values.get(("none", 0.0), {})
    for subject, values in clean.items():
        before = np.mean([values[f"dice_{r}"] for r in REGIONS])
        found[subject] = None
        for eps in grid:
            row = budgets[eps].get(subject)
            if row is not None and np.mean([row[f"dice_{r}"] for r in REGIONS]) <= before / 2:
                found[subject] = eps
                break
    median = censored_median(list(found.values()))
    return {
        "criterion": "mean Dice at most half the clean mean Dice, FGSM",
        "grid": grid,
        "per_subject": found,
        "median": median,
        "median_above": None if median is not None or not found else max(grid, default=None),
        "broken": sum(v is not None for v in found.values()),
        "unbroken": sum(v is None for v in found.values()),
    }


def all_rood_levels(artifacts: dict) -> bool:
    """Whether a card's artifacts ran every severity 1-5, over which ROOD-MRI's overall and
    degradation scores are defined (with fewer, the overall score is mostly the clean Dice)."""
    from keras_advseg.corruptions.registry import every_severity

    return every_severity(artifacts.get("severities"))


def card_flags(clean_dice: dict) -> list[dict]:
    """What a reader must know before any other number: a region whose clean Dice is below
    :data:`~keras_advseg.config.MIN_CLEAN_DICE` is one the model does not segment, so its
    attacked, corrupted and certified numbers measure no robustness (an untrained network
    loses nothing and reads as robust). The leaderboard never ranks a flagged card as robust."""
    from keras_advseg.config import MIN_CLEAN_DICE

    missed = [
        r for r in REGIONS if clean_dice.get(r) is not None and clean_dice[r] < MIN_CLEAN_DICE
    ]
    if not missed:
        return []
    return [
        {
            "code": "low-clean-dice",
            "regions": missed,
            "minimum": MIN_CLEAN_DICE,
            "message": f"clean Dice below {MIN_CLEAN_DICE:g} in "
            f"{', '.join(r.upper() for r in missed)}: the model does not segment "
            f"{'it' if len(missed) == 1 else 'them'}, so its robustness numbers there measure "
            "nothing (an attack or an artifact has no Dice to take)",
        }
    ]


def data_description(artifacts_summary: dict) -> dict:
    """The card's dataset: the raw source it was prepared from, and whether it is the built-in
    phantom (a ``phantom.json`` beside the subjects)."""
    source = artifacts_summary.get("data") or artifacts_summary.get("source")
    kind = "unknown"
    if isinstance(source, str) and source:
        kind = (
            "phantom (MNI152-based, synthetic)"
            if (Path(source) / "phantom.json").is_file()
            else "user data"
        )
    return {"source": source if isinstance(source, str) else None, "kind": kind}


def _commit() -> str | None:
    from keras_advseg.tracking import git_commit

    return git_commit(Path(__file__).resolve().parent)


def vafa_label(plan: CardBudget, shape) -> str:
    """VAFA's setting as the card names it, with the block that fitted the model's input."""
    from keras_advseg.config import VAFA_SETTINGS, fitting_block

    setting = VAFA_SETTINGS[plan.vafa]
    block = fitting_block(shape, setting.block) if shape else setting.block
    return setting.label(plan.vafa, plan.steps, block)


def input_grid(model_path) -> tuple[int, ...] | None:
    """The model's input grid, from its stored preprocessing (None: unknown)."""
    from keras_advseg.export import load_preprocessing

    try:
        return tuple(load_preprocessing(model_path).shape)
    except (InputError, TypeError):
        return None


def audit_found_lower(items: list) -> dict | None:
    """The audit's strongest check when it took mean Dice below the worst case it compared with
    by more than its margin (items 4-7: restarts, transfer, softened or cross-entropy PGD,
    random search), else None: the card then says that its worst case is not the tightest
    bound measured. The audit's subjects are a subset of the card's, so the two means are
    compared as the audit compares them, on the audit's subjects.

    Args:
        items: ``audit.json``'s items (untrusted: anything malformed counts as absent).
    """
    numbers = {i.get("item"): i.get("numbers") or {} for i in items if isinstance(i, dict)}
    try:
        white_box = float(numbers[1]["worst_case"])
        margin = float(numbers[3].get("margin", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    found = {
        4: numbers.get(4, {}).get("best_of"),
        5: numbers.get(5, {}).get("transfer"),
        6: min((numbers.get(6, {}).get("variants") or {}).values(), default=None),
        7: numbers.get(7, {}).get("random_search"),
    }
    found = {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}
    if not found:
        return None
    item = min(found, key=found.get)
    if found[item] >= white_box - margin:
        return None
    return {"item": item, "dice": found[item], "white_box": white_box, "margin": margin}


def censored_median(values: list) -> float | None:
    """The median breaking budget over every subject, the unbroken ones (None) censored at the
    largest budget tried: Kaplan-Meier's median, the smallest budget by which at least half of
    the subjects broke (with one censoring time, after every break, Kaplan-Meier's curve is the
    empirical one). None when fewer than half broke: the median is then above the grid.

    Args:
        values: Each subject's smallest breaking budget, None for a subject that did not break.
    """
    if not values:
        return None
    broken = sorted(v for v in values if v is not None)
    needed = math.ceil(len(values) / 2)
    return float(broken[needed - 1]) if len(broken) >= needed else None


def validate_card(card: dict) -> None:
    """Checks a card against schema version 2: every section, its keys and number types.

    Raises:
        FileFormatError: naming the first field that is missing or of the wrong type.
    """

    def need(condition, where):
        if not condition:
            raise FileFormatError(f"card: {where} is missing or malformed")

    need(card.get("schema") == CARD_SCHEMA, "schema")
    if card.get("version") != CARD_VERSION:
        raise FileFormatError(
            f"card: version {card.get('version')!r}, written by another keras-advseg (this one "
            f"reads version {CARD_VERSION}: sigma, the corruption draws and min_eps changed "
            "meaning); run advseg card again"
        )
    for section in SECTIONS:
        need(isinstance(card.get(section), dict), section)

    def dice(value, where):
        need(isinstance(value, dict) and set(value) == set(REGIONS), where)
        for r, v in value.items():
            need(
                v is None or (isinstance(v, (int, float)) and -1e-9 <= v <= 1 + 1e-9),
                f"{where}.{r}",
            )

    dice(card["clean"].get("dice"), "clean.dice")
    for attack in ("fgsm", "worst"):
        need(isinstance(card["adversarial"].get(attack), dict), f"adversarial.{attack}")
        for eps, value in card["adversarial"][attack].items():
            dice(value, f"adversarial.{attack}.{eps}")
    dice(card["adversarial"].get("vafa", {}).get("dice"), "adversarial.vafa.dice")
    need(isinstance(card["adversarial"].get("min_eps"), dict), "adversarial.min_eps")
    for key in ("overall", "degradation", "mrr"):
        need(isinstance(card["artifacts"].get(key), dict), f"artifacts.{key}")
    need(len(card["certified"]) >= 1, "certified")
    for sigma, value in card["certified"].items():
        dice(value.get("certified_dice"), f"certified.{sigma}.certified_dice")
    need(card["audit"].get("verdict") in ("PASS", "WARN"), "audit.verdict")


def headline_metrics(card: dict) -> dict[str, float]:
    """The card's numbers as MLflow metrics: ``card.clean_dice_wt``, ``card.worst_dice_wt_eps0.05``,
    ``card.artifacts_corrupted_dice_wt`` (``card.artifacts_rood_overall_wt`` where severities 1-5
    ran), ``card.certified_dice_wt_sigma0.25``, ``card.flagged``, ..."""
    flat = {}

    def put(prefix, values):
        for r, v in values.items():
            if v is not None:
                flat[f"card.{prefix}_{r}"] = float(v)

    put("clean_dice", card["clean"]["dice"])
    for eps, values in card["adversarial"]["worst"].items():
        put(f"worst_dice_eps{eps}", values)
    put("vafa_dice", card["adversarial"]["vafa"]["dice"])
    if "corrupted_dice" in card["artifacts"]:
        put("artifacts_corrupted_dice", card["artifacts"]["corrupted_dice"])
    if all_rood_levels(card["artifacts"]):
        put("artifacts_rood_overall", card["artifacts"]["overall"])
    for sigma, value in card["certified"].items():
        put(f"certified_dice_sigma{sigma}", value["certified_dice"])
        if "region_certified_dice" in value:
            put(f"region_certified_dice_sigma{sigma}", value["region_certified_dice"])
    if card["adversarial"]["min_eps"]["median"] is not None:
        flat["card.min_eps_median"] = card["adversarial"]["min_eps"]["median"]
    flat["card.audit_pass"] = 1.0 if card["audit"]["verdict"] == "PASS" else 0.0
    flat["card.flagged"] = 1.0 if card.get("flags") else 0.0
    return flat


def _triple(values, fmt="{:.3f}") -> str:
    return " / ".join("n/a" if values[r] is None else fmt.format(values[r]) for r in REGIONS)


def card_rows(card: dict) -> list[tuple[str, str, str]]:
    """``(axis, measure, WT / TC / ET or value)`` rows shared by the Markdown and HTML cards."""
    adversarial, artifacts = card["adversarial"], card["artifacts"]
    rows = [("WARNING", "not a robustness result", f["message"]) for f in card.get("flags", [])]
    rows += [
        ("clean", "Dice (model space)", _triple(card["clean"]["dice"])),
        ("clean", "Dice (native space)", _triple(card["clean"]["native_dice"])),
        ("clean", "HD95 mm (native space)", _triple(card["clean"]["native_hd95_mm"], "{:.1f}")),
    ]
    if "lesion_dice" in card["clean"]:
        rows += [
            (
                "clean",
                "lesion-wise Dice (BraTS 2023, model space)",
                _triple(card["clean"]["lesion_dice"]),
            ),
            (
                "clean",
                "lesion-wise HD95 mm (BraTS 2023, model space)",
                _triple(card["clean"]["lesion_hd95_mm"], "{:.1f}"),
            ),
        ]
    for eps, values in adversarial["fgsm"].items():
        rows.append(("adversarial", f"Dice under FGSM, eps {eps}", _triple(values)))
    lower = adversarial.get("audit_lower")
    for eps, values in adversarial["worst"].items():
        label = f"Dice under the worst case, eps {eps} ({', '.join(card['budget']['ensemble'])})"
        if lower:
            label += (
                f"; NOT the tightest bound: on the audit's subjects its item {lower['item']} "
                f"reached mean Dice {lower['dice']:.3f}, the audit's worst case (this ensemble, "
                f"the strongest over its step counts) {lower['white_box']:.3f}"
            )
        rows.append(("adversarial", label, _triple(values)))
    vafa = adversarial["vafa"]
    rows.append(
        (
            "adversarial",
            f"Dice under {vafa.get('label', 'VAFA')} (PSNR {vafa['psnr']:.1f} dB, "
            f"SSIM {vafa['ssim']:.3f})",
            _triple(vafa["dice"]),
        )
    )
    m = adversarial["min_eps"]
    top = max(m["grid"], default=0)
    subjects = len(m["per_subject"])
    broken = m.get("broken", subjects - m["unbroken"])
    median = f"median > {top:g}" if m["median"] is None else f"median {m['median']:g}"
    rows.append(
        (
            "adversarial",
            "smallest breaking FGSM eps (min_eps; unbroken subjects censored at the grid's top)",
            f"{median}; {broken} of {subjects} broken by {top:g}",
        )
    )
    levels = ", ".join(str(v) for v in artifacts.get("severities", []))
    if "corrupted_dice" in artifacts:
        rows.append(
            (
                "artifacts",
                f"mean Dice of the corrupted scans (severity {levels})",
                _triple(artifacts["corrupted_dice"]),
            )
        )
    if all_rood_levels(artifacts):
        rows += [
            (
                "artifacts",
                "ROOD-MRI overall (clean counted as level 0)",
                _triple(artifacts["overall"]),
            ),
            ("artifacts", "ROOD-MRI degradation", _triple(artifacts["degradation"])),
        ]
    else:
        rows.append(
            (
                "artifacts",
                "ROOD-MRI overall and degradation",
                f"not shown: defined over severities 1-5, this card ran {levels or 'none'}",
            )
        )
    rows += [
        ("artifacts", "resilience rate mRR (Robo3D)", _triple(artifacts["mrr"])),
        ("artifacts", "worst corruption", " / ".join(artifacts["worst"][r] for r in REGIONS)),
    ]
    if any(v is not None for v in artifacts["mce"].values()):
        rows.append(
            ("artifacts", "corruption error mCE vs the reference", _triple(artifacts["mce"]))
        )
    for sigma, value in card["certified"].items():
        rows.append(
            (
                "certified",
                f"certified Dice, class-wise, sigma {sigma} std (l2 radius "
                f"{value['radius']:.3g} std, l-inf {value['linf']:.2g})",
                _triple(value["certified_dice"]),
            )
        )
        if any(v is not None for v in value.get("region_certified_dice", {}).values()):
            rows.append(
                (
                    "certified",
                    f"certified Dice, each region certified as its own, sigma {sigma}",
                    _triple(value["region_certified_dice"]),
                )
            )
        rows.append(
            (
                "certified",
                f"the smoothed model's own Dice (not certified), sigma {sigma}",
                _triple(value["smoothed_dice"]),
            )
        )
        if any(v is not None for v in value.get("abstain_rate_region", {}).values()):
            rows.append(
                (
                    "certified",
                    f"abstaining share inside the reference region, sigma {sigma}",
                    _triple(value["abstain_rate_region"], "{:.1%}"),
                )
            )
        rows.append(
            (
                "certified",
                f"abstaining share of the brain, sigma {sigma}",
                f"{value['abstain_rate_brain']:.1%}",
            )
        )
    rows.append(
        (
            "audit",
            "gradient-masking audit",
            card["audit"]["verdict"]
            + " ("
            + ", ".join(f"{i['number']}: {i['verdict']}" for i in card["audit"]["items"])
            + ")",
        )
    )
    return rows


def card_markdown(card: dict) -> str:
    """``card.md``: the numbers, the budget, and what they can and cannot claim."""
    budget = card["budget"]
    lines = [
        f"# Robustness card: `{card['model']}`\n",
        f"Budget **{budget['name']}** (seed {card['seed']}; {card['claims']['subjects']}); "
        f"keras-advseg {card['keras_advseg']}; schema {card['schema']} v{card['version']}. "
        "Regions WT / TC / ET.\n",
        provenance(card) + "\n",
        "| axis | measure | WT / TC / ET |",
        "|---|---|---|",
        *[f"| {a} | {m} | {v} |" for a, m, v in card_rows(card)],
        "",
        "## What this card can and cannot claim\n",
        *[f"- **{k}**: {v}" for k, v in card["claims"].items() if k != "subjects"],
        "",
        "Files: `adversarial/` (advseg evaluate), `artifacts/` (evaluate --corruptions), "
        "`certified/` (advseg certify), `audit/` (advseg audit).\n",
    ]
    return "\n".join(lines)


FIGURES = (
    ("Dice under each MRI corruption", "artifacts/fig_corruption_severity.png"),
    ("Certified Dice against sigma", "certified/fig_certified.png"),
    ("Certified voxels", "certified/fig_certificate.png"),
    ("Dice against FGSM eps", "adversarial/fig_eps.png"),
)


def provenance(card: dict) -> str:
    """Which data, code and date the card's numbers come from."""
    data = card.get("data") or {}
    return (
        f"Data: {data.get('kind', 'unknown')}, `{data.get('source') or 'source not recorded'}` "
        f"(hash {str(card.get('data_hash') or 'n/a')[:12]}); "
        f"commit {str(card.get('commit') or 'not a git checkout')[:12]}; "
        f"created {card.get('created', 'n/a')}."
    )


def card_html(card: dict, out: Path) -> str:
    """``card.html``: one self-contained page (figures embedded as data URIs, no network)."""
    rows = "\n".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(m)}</td><td>{html.escape(v)}</td></tr>"
        for a, m, v in card_rows(card)
    )
    claims_html = "\n".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
        for k, v in card["claims"].items()
        if k != "subjects"
    )
    figures = []
    for caption, relative in FIGURES:
        path = out / relative
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
            figures.append(
                f'<figure><img alt="{html.escape(caption)}" '
                f'src="data:image/png;base64,{data}"><figcaption>'
                f"{html.escape(caption)}</figcaption></figure>"
            )
    budget = card["budget"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Robustness card: {html.escape(card["model"])}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #eee; }} img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }}
</style></head><body>
<h1>Robustness card</h1>
<p><code>{html.escape(card["model"])}</code>: budget <b>{html.escape(budget["name"])}</b>
(seed {card["seed"]}; {html.escape(card["claims"]["subjects"])}); keras-advseg
{html.escape(card["keras_advseg"])}; schema {html.escape(card["schema"])} v{card["version"]}.
Regions WT / TC / ET.</p>
<p>{html.escape(provenance(card).replace("`", ""))}</p>
<table><tr><th>axis</th><th>measure</th><th>WT / TC / ET</th></tr>
{rows}
</table>
<h2>What this card can and cannot claim</h2>
<ul>{claims_html}</ul>
<h2>Figures</h2>
{"".join(figures)}
</body></html>
"""


def read_card(path) -> dict:
    """A ``card.json`` (or the folder holding it) read back and validated (untrusted input).

    Raises:
        FileFormatError: not a card of this schema.
    """
    path = Path(path)
    path = path / "card.json" if path.is_dir() else path
    card = _read_json(path)
    validate_card(card)
    card["path"] = str(path.parent)
    return card


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: missing or unreadable ({exc})") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{path}: not a JSON object")
    return value


def _number(value):
    return None if value is None else float(value)


def summary_lines(card: dict, out) -> list[str]:
    """What ``advseg card`` prints."""
    lines = [f"{a}: {m}: {v}" for a, m, v in card_rows(card)]
    reused = f" (reused: {', '.join(card['reused'])})" if card["reused"] else ""
    lines.append(
        f"wrote {Path(out) / 'card.html'}, card.md and card.json in {card['seconds']:.0f} s{reused}"
    )
    return lines
