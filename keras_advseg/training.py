"""``advseg train``: training with or without a defense, tracked, resumable, distributable.

Reproducibility: weights are initialised from ``seed``; epoch ``e`` reads
its data in an order and with augmentations drawn from ``(seed, e)``, and the
dropout/noise random states are reset from ``(seed, e)`` at the start of the
epoch, so an interrupted run resumed from its last epoch checkpoint follows
exactly the path of an uninterrupted one (with op determinism on, the default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_advseg.atomic import write_text_atomic
from keras_advseg.data.errors import DataError
from keras_advseg.data.pipeline import slice_dataset, volume_dataset
from keras_advseg.data.prepare import PrepareConfig, PreparedDataset, load_prepared, prepare_dataset, split_subjects
from keras_advseg.defenses import AdversarialTrainer, NoiseTrainer, SegmentationTrainer, write_soft_labels
from keras_advseg.losses import SoftDiceLoss
from keras_advseg.metrics import brats_dice, predict_labels, traced_inference
from keras_advseg.models import SliceWise, unet2d, unet3d

MODELS = ("unet3d", "unet2d")
DEFENSES = ("none", "adversarial", "distillation", "noise")
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LOSSES = ("dice", "dice_ce")
LR_SCHEDULES = ("constant", "cosine")

PRESETS: dict[str, dict] = {
    # The paper: 3-D batch 1, Adam 1e-4, 100 epochs; distillation 400 epochs at 5e-4;
    # adversarial training "the same hyperparameters as in the distillation method";
    # 2-D batch 64, 400 epochs, 1e-5; 128^3 volumes; its augmentation.
    "paper": {"shape": 128, "base_filters": 16, "depth": 5, "loss": "dice",
              "unet3d": {"batch_size": 1, "lr": 1e-4, "epochs": 100},
              "unet3d/distillation": {"epochs": 400, "lr": 5e-4},
              "unet3d/adversarial": {"epochs": 400, "lr": 5e-4},
              "unet2d": {"batch_size": 64, "lr": 1e-5, "epochs": 400}},
    # Fits a 2-core CPU in minutes: 32^3 volumes, a narrower and shallower network.
    "quick": {"shape": 32, "base_filters": 8, "depth": 4, "loss": "dice_ce", "lr_schedule": "cosine",
              "unet3d": {"batch_size": 1, "lr": 2e-3, "epochs": 30},
              # Defenses train longer, as in the paper (which gives them 4x the epochs): a
              # teacher and student at T = 20 need 60 epochs each to match the clean Dice.
              "unet3d/distillation": {"epochs": 60},
              "unet3d/adversarial": {"epochs": 45},
              "unet2d": {"batch_size": 32, "lr": 3e-3, "epochs": 10}},
    # Seconds: for tests and a first look.
    "smoke": {"shape": 16, "base_filters": 4, "depth": 3, "loss": "dice_ce",
              "unet3d": {"batch_size": 2, "lr": 3e-3, "epochs": 2},
              "unet2d": {"batch_size": 16, "lr": 3e-3, "epochs": 2}},
}


class TrainingError(RuntimeError):
    """Training could not finish (non-finite loss, unusable checkpoint)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (all of it is logged to MLflow)."""

    model: str = "unet3d"
    defense: str = "none"
    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    lr_schedule: str = "constant"
    seed: int = 0
    shape: int = 128
    base_filters: int = 16
    depth: int = 5
    dropout: float = 0.3
    loss: str = "dice"
    augment: bool = True
    val_fraction: float = 0.15
    adv_eps: float = 0.05
    beta: float = 0.5
    adv_mode: str = "joint"
    temperature: float = 1.0
    teacher: str | None = None
    teacher_temperature: float | None = None
    init: str | None = None
    noise_radius: float = 0.01
    strategy: str = "default"
    deterministic: bool = True
    precision: str = "float32"
    preset: str | None = None

    def __post_init__(self):
        for name, allowed in (("model", MODELS), ("defense", DEFENSES), ("strategy", STRATEGIES), ("loss", LOSSES),
                              ("precision", PRECISIONS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}. Received: {name}={getattr(self, name)!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1. Received: epochs={self.epochs}, "
                             f"batch_size={self.batch_size}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive. Received: temperature={self.temperature}")
        if self.teacher_temperature is not None and self.teacher_temperature <= 0:
            raise ValueError(f"teacher_temperature must be positive. Received: teacher_temperature="
                             f"{self.teacher_temperature}")
        if self.init == "teacher" and self.defense != "distillation":
            raise ValueError(f"init='teacher' starts a distillation student from its teacher; "
                             f"it needs defense='distillation'. Received: defense={self.defense!r}")

    @property
    def label_temperature(self) -> float:
        """The temperature the distillation teacher was trained at: ``teacher_temperature``, default T."""
        return self.teacher_temperature or self.temperature

    @classmethod
    def from_preset(cls, preset: str, model: str = "unet3d", defense: str = "none", **overrides) -> "TrainConfig":
        """A config from :data:`PRESETS`, then ``overrides`` (None values ignored).

        Raises:
            ValueError: unknown preset.
        """
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
        table = PRESETS[preset]
        values = {k: v for k, v in table.items() if not isinstance(v, dict)}
        values.update(table.get(model, {}))
        values.update(table.get(f"{model}/{defense}", {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, defense=defense, preset=preset, **values)


@dataclass
class TrainResult:
    """Where a finished run left its outputs."""

    model_path: Path
    last_path: Path
    run_id: str
    best_score: float
    epochs_run: int


def open_data(data: str | Path, cache: str | Path, shape: int, seed: int = 0) -> PreparedDataset:
    """A prepared cache as it is, or a raw dataset prepared into ``cache`` (resumable).

    Raises:
        DataError: unreadable data.
    """
    data = Path(data)
    if (data / "prepared.json").is_file():
        return load_prepared(data)
    return prepare_dataset(data, cache, PrepareConfig(shape=(shape,) * 3, seed=seed))


def make_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, or CPU) or ``multiworker`` (TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_role() -> tuple[bool, str]:
    """``(is_chief, "type-index")`` from ``TF_CONFIG``; a single process is the chief."""
    spec = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = spec.get("task", {})
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    has_chief = "chief" in spec.get("cluster", {})
    chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    return chief, f"{kind}-{index}"


def build_network(config: TrainConfig, shape: tuple[int, int, int]) -> keras.Model:
    """The configured UNet: 3-D on volumes, or 2-D on axial slices."""
    kwargs = dict(base_filters=config.base_filters, depth=config.depth, dropout=config.dropout)
    if config.model == "unet3d":
        return unet3d(shape + (4,), **kwargs)
    return unet2d(shape[:2] + (4,), **kwargs)


def build_trainer(config: TrainConfig, network: keras.Model) -> SegmentationTrainer:
    """The trainer for ``config.defense`` (distillation trains a plain trainer on soft labels)."""
    if config.defense == "adversarial":
        return AdversarialTrainer(network, eps=config.adv_eps, beta=config.beta, mode=config.adv_mode,
                                  temperature=config.temperature)
    if config.defense == "noise":
        return NoiseTrainer(network, radius=config.noise_radius, seed=config.seed, temperature=config.temperature)
    return SegmentationTrainer(network, temperature=config.temperature)


def training_loss(config: TrainConfig):
    """The paper's soft Dice at the config's temperature, plus cross-entropy for ``dice_ce``."""
    dice = SoftDiceLoss(temperature=config.temperature)
    if config.loss == "dice":
        return dice
    cross_entropy = keras.losses.CategoricalCrossentropy(from_logits=True)
    temperature = config.temperature

    def dice_ce(y_true, y_pred):
        return dice(y_true, y_pred) + cross_entropy(y_true, keras.ops.cast(y_pred, "float32") / temperature)

    return dice_ce


def deployable(config: TrainConfig, network: keras.Model) -> keras.Model:
    """The model that attacks and evaluation use: volumes in, logits out."""
    return SliceWise(network) if config.model == "unet2d" else network


def train(config: TrainConfig, data: str | Path, out: str | Path, *, tracking_uri: str, experiment: str,
          run_name: str | None = None, resume: bool = False, verbose: int = 2) -> TrainResult:
    """Trains ``config`` on ``data`` into ``out`` inside an MLflow run.

    Outputs in ``out``: ``model.keras`` (best by mean validation Dice),
    ``last.keras``, ``checkpoint/`` (last epoch's weights and state), and for
    distillation ``teacher.keras`` and ``soft_labels/``.

    Raises:
        DataError: bad data. TrainingError: non-finite loss or a bad resume.
        TrackingError: the tracking store is unreachable (before training).
    """
    import mlflow

    from keras_advseg.tracking import git_commit, tracked_run

    out = Path(out)
    state_path = out / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    if state is not None and not resume:
        raise TrainingError(f"{out}: holds a previous run's checkpoint; pass --resume to continue it or choose a new --out")
    if resume and state is None:
        raise TrainingError(f"{out}: no checkpoint to resume (expected {state_path})")
    if resume and state.get("finished"):
        raise TrainingError(f"{out}: that run already finished")
    if resume:
        config = TrainConfig(**state["config"])
    strategy = make_strategy(config.strategy)  # before any other TensorFlow work (multi-worker needs it)
    chief, role = worker_role()
    if not chief:  # other workers keep their files and runs apart from the chief's
        out = out / "workers" / role
        out.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    out.mkdir(parents=True, exist_ok=True)
    prepared = open_data(data, out / "prepared", config.shape, seed=config.seed)
    tags = {"defense": config.defense, "model": config.model, "temperature": str(config.temperature),
            "adv_eps": str(config.adv_eps if config.defense == "adversarial" else 0), "preset": str(config.preset)}
    commit = git_commit(Path(__file__).parent)
    if commit:
        tags["git_commit"] = commit
    with tracked_run(tracking_uri, experiment, run_name=run_name, run_id=state and state.get("run_id"),
                     tags=tags) as run:
        if not resume:
            mlflow.log_params({**{k: v for k, v in asdict(config).items()}, "data_hash": prepared.data_hash,
                               "data_root": str(prepared.root)})
        result = _fit(config, prepared, out, run.info.run_id, state, verbose, metric_prefix="", strategy=strategy)
        mlflow.log_artifact(str(result.model_path))
        mlflow.log_artifact(str(result.last_path))
        _log_model(result.model_path)
        return result


def _fit(config: TrainConfig, prepared: PreparedDataset, out: Path, run_id: str, state: dict | None,
         verbose: int, metric_prefix: str, strategy: tf.distribute.Strategy) -> TrainResult:
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        return _fit_with_policy(config, prepared, out, run_id, state, verbose, metric_prefix, strategy)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _fit_with_policy(config: TrainConfig, prepared: PreparedDataset, out: Path, run_id: str, state: dict | None,
                     verbose: int, metric_prefix: str, strategy: tf.distribute.Strategy) -> TrainResult:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    train_ids, val_ids = split_subjects(prepared.train_ids, config.val_fraction, config.seed + 1)
    if not train_ids:
        raise DataError(f"{prepared.root}: no training subjects")
    soft_labels = teacher = None
    if config.defense == "distillation":
        soft_labels, teacher = _soft_labels(config, prepared, train_ids, out, verbose, strategy)

    start = start_epoch(state)
    steps, stream = _stream(config, prepared, train_ids, soft_labels, start, strategy.num_replicas_in_sync)
    with strategy.scope():
        network = build_network(config, prepared.shape)
        if config.init:
            warm_start(config, network, teacher)
        trainer = build_trainer(config, network)
        trainer.compile(optimizer=keras.optimizers.Adam(learning_rate(config, steps)), loss=training_loss(config))
        dummy = np.zeros((1,) + tuple(network.input_shape[1:]), np.float32)
        trainer(dummy)
        trainer.optimizer.build(trainer.trainable_variables)
    best = {"score": -math.inf, "epoch": None}
    if state is not None:
        trainer.load_weights(out / "checkpoint" / "last.weights.h5")
        best = {"score": state["best_score"], "epoch": state["best_epoch"]}

    deployed = deployable(config, network)
    callbacks = [
        _EpochSeeds(config.seed),
        _Validation(deployed, prepared, val_ids),
        _NonFinite(),
        _Checkpoint(out, config, run_id, deployed, best),
        _MlflowEpochs(metric_prefix),
    ]
    if start < config.epochs:
        trainer.fit(stream, epochs=config.epochs, initial_epoch=start, steps_per_epoch=steps, shuffle=False,
                    callbacks=callbacks, verbose=verbose)
    non_finite = callbacks[2]
    if non_finite.where is not None:
        raise TrainingError(f"non-finite loss at epoch {non_finite.where[0] + 1}, batch {non_finite.where[1] + 1}; "
                            f"training stopped, the last good checkpoint is in {out / 'checkpoint'}")
    checkpoint = callbacks[3]
    last = _save_atomic(deployed, out / "last.keras")
    best_path = out / "best.keras"
    model_path = out / "model.keras"
    shutil.copyfile(best_path if best_path.is_file() else last, out / ".model.keras.partial")
    os.replace(out / ".model.keras.partial", model_path)
    checkpoint.finish()
    return TrainResult(model_path, last, run_id, checkpoint.best["score"], config.epochs)


def start_epoch(state: dict | None) -> int:
    """The epoch a run starts from: 0, or the last checkpoint's epoch when resuming."""
    return 0 if state is None else int(state["epoch"])


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """Adam's learning rate: ``config.lr``, or a cosine decay from it to 1% over the whole run.

    The schedule is a function of the optimiser's step counter, which the
    checkpoint restores, so a resumed run follows the same schedule.
    """
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=steps_per_epoch * config.epochs,
                                                      alpha=0.01)
    return config.lr


def warm_start(config: TrainConfig, network: keras.Model, teacher: keras.Model | None = None) -> None:
    """Initialises ``network`` from ``config.init``: a trained model of the same architecture, or the teacher.

    ``init="teacher"`` starts a distillation student from its teacher with the
    logits rescaled by ``T / teacher_temperature``, i.e. the teacher as a network
    trained at the student's temperature (:func:`~keras_advseg.models.scale_logits`).

    Raises:
        TrainingError: the model's weights do not fit ``network``.
    """
    import mlflow

    from keras_advseg.export import load_model
    from keras_advseg.models import scale_logits
    from keras_advseg.tracking import resolve_model_path

    if config.init == "teacher":
        source, factor = teacher, config.temperature / config.label_temperature
    else:
        source, factor = load_model(resolve_model_path(config.init, mlflow.get_tracking_uri())), 1.0
    source = getattr(source, "slice_model", source)  # a deployed 2-D model wraps its network
    weights = source.get_weights()
    expected = [tuple(w.shape) for w in network.weights]
    if [tuple(w.shape) for w in weights] != expected:
        raise TrainingError(f"{config.init}: its weights do not fit the configured {config.model} network "
                            f"(base_filters={config.base_filters}, depth={config.depth}); expected the same architecture")
    network.set_weights(weights)
    if factor != 1.0:
        scale_logits(network, factor)


def _soft_labels(config: TrainConfig, prepared, train_ids, out: Path, verbose: int, strategy):
    """The teacher's soft labels on the training volumes (training the teacher first if none is given).

    Returns:
        ``(folder, teacher)``: the labels are ``softmax(z / config.label_temperature)``,
        the teacher's own output at the temperature it was trained at.
    """
    from keras_advseg.export import load_model
    from keras_advseg.tracking import resolve_model_path

    folder = out / "soft_labels"
    if config.teacher:
        import mlflow

        teacher = load_model(resolve_model_path(config.teacher, mlflow.get_tracking_uri()))
    elif (out / "teacher.keras").is_file():
        teacher = load_model(out / "teacher.keras")
    else:
        teacher_config = dataclasses.replace(config, defense="none", teacher=None)
        teacher_out = out / "teacher"
        shutil.rmtree(teacher_out, ignore_errors=True)
        result = _fit(teacher_config, prepared, teacher_out, run_id="teacher", state=None, verbose=verbose,
                      metric_prefix="teacher_", strategy=strategy)
        shutil.copyfile(result.model_path, out / "teacher.keras")
        teacher = load_model(out / "teacher.keras")
    labels = write_soft_labels(teacher, prepared, train_ids, folder, config.label_temperature)
    return str(labels), teacher


def _stream(config: TrainConfig, prepared, train_ids, soft_labels, start: int, replicas: int = 1):
    """The data of epochs ``start..epochs-1``, each epoch drawn from ``(seed, epoch)``.

    With several replicas every batch is full (a short last batch would leave
    some replicas without data): the epoch's stream is continued, with fresh
    augmentations, to fill it.

    Raises:
        ValueError: the global batch is smaller than the number of replicas.
    """
    if config.batch_size < replicas:
        raise ValueError(f"--batch-size {config.batch_size} is smaller than the {replicas} replicas; "
                         "each replica needs at least one sample per step")
    if config.model == "unet3d":
        steps = math.ceil(len(train_ids) / config.batch_size)
        make = lambda seed: volume_dataset(prepared, ids=train_ids, batch_size=config.batch_size, seed=seed,
                                           augment_data=config.augment, soft_labels=soft_labels)
    else:
        steps = math.ceil(len(train_ids) * prepared.shape[2] / config.batch_size)
        make = lambda seed: slice_dataset(prepared, ids=train_ids, batch_size=config.batch_size, seed=seed,
                                          augment_data=config.augment, soft_labels=soft_labels)
    stream = None
    for epoch in range(start, config.epochs):
        epoch_data = make(config.seed * 100_003 + epoch)
        if replicas > 1:
            epoch_data = epoch_data.unbatch().repeat().batch(config.batch_size, drop_remainder=True)
        epoch_data = epoch_data.take(steps)
        stream = epoch_data if stream is None else stream.concatenate(epoch_data)
    return steps, stream


def _save_atomic(model: keras.Model, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _log_model(path: Path) -> None:
    """Logs the model in MLflow's Keras flavour (loadable with ``mlflow.keras.load_model``)."""
    import mlflow

    from keras_advseg.export import load_model

    mlflow.keras.log_model(load_model(path), name="model",
                           pip_requirements=["keras-advseg", f"keras=={keras.__version__}",
                                             f"tensorflow=={tf.__version__}"])


class _EpochSeeds(keras.callbacks.Callback):
    """Resets every random state (dropout, noise) from ``(seed, epoch)`` at each epoch start."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        for index, variable in enumerate(states):
            variable.assign(np.array([self.seed * 7919 + index, epoch], dtype=variable.dtype))


class _Validation(keras.callbacks.Callback):
    """BraTS Dice (WT/TC/ET and their mean) of the deployable model on the validation subjects."""

    def __init__(self, model, prepared, ids):
        super().__init__()
        self.prepared, self.ids = prepared, ids
        self.forward = traced_inference(model)  # the eager call's logits, about 6x faster per volume

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self.ids:
            return
        scores = {"wt": [], "tc": [], "et": []}
        for subject_id in self.ids:
            image, labels = self.prepared.load(subject_id)
            dice = brats_dice(labels, predict_labels(self.forward, image[None])[0])
            for region in scores:
                scores[region].append(float(dice[region]))
        for region, values in scores.items():
            logs[f"val_dice_{region}"] = float(np.mean(values))
        logs["val_dice_mean"] = float(np.mean([logs[f"val_dice_{r}"] for r in scores]))


class _NonFinite(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.where = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.where = (self._epoch, batch)
            self.model.stop_training = True


class _Checkpoint(keras.callbacks.Callback):
    """Saves the last epoch's full training state and the best deployable model, atomically."""

    def __init__(self, out: Path, config: TrainConfig, run_id: str, deployed, best: dict):
        super().__init__()
        self.dir = out / "checkpoint"
        self.out, self.config, self.run_id, self.deployed, self.best = out, config, run_id, deployed, best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not np.isfinite(float(logs.get("loss", 0.0))):
            return  # keep the last good checkpoint
        self.dir.mkdir(parents=True, exist_ok=True)
        score = logs.get("val_dice_mean", -float(logs.get("loss", 0.0)))
        if score > self.best["score"]:
            self.best = {"score": float(score), "epoch": epoch + 1}
            _save_atomic(self.deployed, self.out / "best.keras")
        tmp = self.dir / "last.partial.weights.h5"
        self.model.save_weights(tmp)
        os.replace(tmp, self.dir / "last.weights.h5")
        self._write_state(epoch + 1, finished=False)

    def finish(self):
        self._write_state(self.config.epochs, finished=True)

    def _write_state(self, epoch: int, finished: bool):
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {"epoch": epoch, "run_id": self.run_id, "best_score": self.best["score"],
                 "best_epoch": self.best["epoch"], "finished": finished, "config": asdict(self.config)}
        write_text_atomic(self.dir / "state.json", json.dumps(state, indent=2))


class _MlflowEpochs(keras.callbacks.Callback):
    """Logs every epoch's metrics (loss, validation Dice) to the active MLflow run, names prefixed."""

    def __init__(self, prefix: str = ""):
        super().__init__()
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        import mlflow

        if mlflow.active_run() is None:
            return
        metrics = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}
        mlflow.log_metrics({self.prefix + k: v for k, v in metrics.items() if np.isfinite(v)}, step=epoch + 1)
