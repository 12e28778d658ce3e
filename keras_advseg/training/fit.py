"""One training run: build the network and its trainer, stream the data, fit, keep the best model.

Reproducibility: weights are initialised from ``seed``; epoch ``e`` reads its
data in an order and with augmentations drawn from ``(seed, e)``, and the
dropout/noise random states are reset from ``(seed, e)`` at the start of the
epoch, so an interrupted run resumed from its last epoch checkpoint follows
exactly the path of an uninterrupted one (with op determinism on, the default).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_advseg.config import TrainConfig
from keras_advseg.data.errors import DataError
from keras_advseg.data.pipeline import slice_dataset, surfaced_data_errors, volume_dataset
from keras_advseg.data.prepare import PreparedDataset, split_subjects
from keras_advseg.defenses import (
    AdversarialTrainer,
    FastTrainer,
    GaussianNoiseTrainer,
    NoiseTrainer,
    PGDTrainer,
    SegmentationTrainer,
    TradesTrainer,
)
from keras_advseg.errors import InputError, TrainingError
from keras_advseg.export import load_model
from keras_advseg.inference import Preprocessing
from keras_advseg.io import copy_atomic
from keras_advseg.losses import SoftDiceLoss
from keras_advseg.models import SliceWise, scale_logits, unet2d, unet3d
from keras_advseg.training.callbacks import (
    CatastrophicOverfitting,
    EpochLogger,
    EpochSeeds,
    StopOnNonFinite,
    Validation,
)
from keras_advseg.training.checkpoint import (
    Checkpoint,
    restored_best,
    save_model_atomic,
    start_epoch,
)
from keras_advseg.training.soft_labels import write_soft_labels

ModelLoader = Callable[[str], keras.Model]
"""Turns a model reference (a path; the workflow also accepts MLflow run ids) into a model."""


@dataclass
class TrainResult:
    """Where a finished run left its outputs."""

    model_path: Path
    last_path: Path
    run_id: str
    best_score: float
    epochs_run: int
    stopped: str | None = None
    """Why training stopped before its last epoch (catastrophic overfitting), or None."""


def build_network(config: TrainConfig, shape: tuple[int, int, int]) -> keras.Model:
    """The configured UNet: 3-D on volumes, or 2-D on axial slices."""
    kwargs = dict(base_filters=config.base_filters, depth=config.depth, dropout=config.dropout)
    if config.model == "unet3d":
        return unet3d(shape + (4,), **kwargs)
    return unet2d(shape[:2] + (4,), **kwargs)


def robust_dice_check(model, prepared, ids, eps: float, subjects: int = 2, steps: int = 3):
    """``() -> float``: mean Dice (WT, TC, ET) of ``model`` on a few subjects under a short PGD.

    The catastrophic-overfitting detector's signal for fast adversarial training.
    """
    from keras_advseg.attacks.core import mean_region_dice
    from keras_advseg.attacks.projected_gradient import pgd
    from keras_advseg.data.pipeline import one_hot_labels

    images, labels = zip(*(prepared.load(i) for i in ids[:subjects]))
    x, y = np.stack(images), one_hot_labels(np.stack(labels))

    def measure() -> float:
        x_adv = pgd(model, x, y, eps=eps, steps=steps, seed=0)
        return float(np.mean(mean_region_dice(y, model(x_adv, training=False))))

    return measure


def build_trainer(config: TrainConfig, network: keras.Model) -> SegmentationTrainer:
    """The trainer for ``config.defense`` (distillation trains a plain trainer on soft labels)."""
    if config.defense in ("pgd", "fast", "trades"):
        common = dict(eps=config.adv_eps, seed=config.seed, temperature=config.temperature)
        if config.defense == "pgd":
            return PGDTrainer(network, steps=config.adv_steps, beta=config.clean_weight, **common)
        if config.defense == "fast":
            return FastTrainer(network, beta=config.clean_weight, **common)
        return TradesTrainer(network, steps=config.adv_steps, beta=config.trades_beta, **common)
    if config.defense == "adversarial":
        return AdversarialTrainer(
            network,
            eps=config.adv_eps,
            beta=config.clean_weight,
            mode=config.adv_mode,
            temperature=config.temperature,
        )
    if config.defense == "gaussian":
        return GaussianNoiseTrainer(
            network, sigma=config.noise_sigma, seed=config.seed, temperature=config.temperature
        )
    if config.defense == "noise":
        return NoiseTrainer(
            network, radius=config.noise_radius, seed=config.seed, temperature=config.temperature
        )
    return SegmentationTrainer(network, temperature=config.temperature)


def training_loss(config: TrainConfig):
    """The paper's soft Dice at the config's temperature, plus cross-entropy for ``dice_ce``."""
    dice = SoftDiceLoss(temperature=config.temperature)
    if config.loss == "dice":
        return dice
    cross_entropy = keras.losses.CategoricalCrossentropy(from_logits=True)
    temperature = config.temperature

    def dice_ce(y_true, y_pred):
        return dice(y_true, y_pred) + cross_entropy(
            y_true, keras.ops.cast(y_pred, "float32") / temperature
        )

    return dice_ce


def deployable(config: TrainConfig, network: keras.Model) -> keras.Model:
    """The model that attacks and evaluation use: volumes in, logits out."""
    return SliceWise(network) if config.model == "unet2d" else network


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """Adam's learning rate: ``config.lr``, or a cosine decay from it to 1% over the whole run.

    The schedule is a function of the optimiser's step counter, which the
    checkpoint restores, so a resumed run follows the same schedule.
    """
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.lr, decay_steps=steps_per_epoch * config.epochs, alpha=0.01
        )
    return config.lr


def warm_start(
    config: TrainConfig,
    network: keras.Model,
    teacher: keras.Model | None = None,
    load: ModelLoader = load_model,
) -> None:
    """Initialises ``network`` from ``config.init``: a trained model of the same architecture, or the teacher.

    ``init="teacher"`` starts a distillation student from its teacher with the
    logits rescaled by ``T / teacher_temperature``, i.e. the teacher as a network
    trained at the student's temperature (:func:`~keras_advseg.models.scale_logits`).

    Raises:
        TrainingError: the model's weights do not fit ``network``.
    """
    if config.init == "teacher":
        source, factor = teacher, config.temperature / config.label_temperature
    else:
        source, factor = load(config.init), 1.0
    source = getattr(source, "slice_model", source)  # a deployed 2-D model wraps its network
    weights = source.get_weights()
    expected = [tuple(w.shape) for w in network.weights]
    if [tuple(w.shape) for w in weights] != expected:
        raise TrainingError(
            f"{config.init}: its weights do not fit the configured {config.model} network "
            f"(base_filters={config.base_filters}, depth={config.depth}); "
            "expected the same architecture"
        )
    network.set_weights(weights)
    if factor != 1.0:
        scale_logits(network, factor)


def fit(
    config: TrainConfig,
    prepared: PreparedDataset,
    out: Path,
    *,
    run_id: str,
    state: dict | None = None,
    log_epoch: Callable[[dict, int], None] | None = None,
    load: ModelLoader = load_model,
    verbose: int = 2,
    metric_prefix: str = "",
    strategy: tf.distribute.Strategy | None = None,
    finish: bool = True,
) -> TrainResult:
    """Trains ``config`` on ``prepared`` into ``out``, under the config's dtype policy.

    Outputs in ``out``: ``model.keras`` (best by mean validation Dice),
    ``last.keras``, ``checkpoint/`` (last epoch's weights and state), and for
    distillation ``teacher.keras`` and ``soft_labels/``.

    Args:
        config: The run.
        prepared: The prepared dataset (its training split is used).
        out: Output folder.
        run_id: Stored in the checkpoint, so a resumed run continues the same tracked run.
        state: The checkpoint state to resume from (None: a new run).
        log_epoch: Receives every epoch's metrics and the epoch number (1-based).
        load: Loads ``config.init`` and ``config.teacher`` references.
        verbose: Keras ``fit`` verbosity.
        metric_prefix: Prefix of the logged metric names (a distillation teacher's are ``teacher_``).
        strategy: The ``tf.distribute`` strategy (default: the current one).
        finish: Mark the checkpoint finished at the end. False: the caller marks it
            (:func:`~keras_advseg.training.checkpoint.mark_finished`) once it has recorded the
            outputs too, so that an interruption in between leaves a run that ``--resume``
            completes.

    Returns:
        A :class:`TrainResult`.

    Raises:
        DataError: no training subjects. TrainingError: non-finite loss or an unfit warm start.
    """
    strategy = strategy or tf.distribute.get_strategy()
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        return _fit_with_policy(
            config,
            prepared,
            Path(out),
            run_id,
            state,
            log_epoch,
            load,
            verbose,
            metric_prefix,
            strategy,
            finish,
        )
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _fit_with_policy(
    config, prepared, out, run_id, state, log_epoch, load, verbose, metric_prefix, strategy, finish
) -> TrainResult:
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    train_ids, val_ids = split_subjects(prepared.train_ids, config.val_fraction, config.seed + 1)
    if not train_ids:
        raise DataError(f"{prepared.root}: no training subjects")
    soft_labels = teacher = None
    if config.defense == "distillation":
        soft_labels, teacher = _soft_labels(
            config, prepared, train_ids, out, log_epoch, load, verbose, strategy
        )

    start = start_epoch(state)
    steps, stream = _stream(
        config, prepared, train_ids, soft_labels, start, strategy.num_replicas_in_sync
    )
    with strategy.scope():
        network = build_network(config, prepared.shape)
        if config.init:
            warm_start(config, network, teacher, load)
        trainer = build_trainer(config, network)
        trainer.compile(
            optimizer=keras.optimizers.Adam(learning_rate(config, steps)),
            loss=training_loss(config),
        )
        dummy = np.zeros((1,) + tuple(network.input_shape[1:]), np.float32)
        trainer(dummy)
        if not trainer.optimizer.built:  # compile builds it once the network is built
            trainer.optimizer.build(trainer.trainable_variables)  # before a checkpoint restores it
    deployed = deployable(config, network)
    preprocessing = Preprocessing.from_prepared(prepared)
    checkpoint = Checkpoint(out, config, run_id, deployed, restored_best(state), preprocessing)
    if state is not None:
        checkpoint.restore(trainer)
    non_finite = StopOnNonFinite()
    # The epoch's metrics are handed over before its checkpoint is committed: an interrupt
    # between the two repeats the epoch on resume (the workflow drops metrics it already
    # logged), and never leaves a checkpointed epoch without its metrics.
    logger = [EpochLogger(log_epoch, metric_prefix)] if log_epoch is not None else []
    callbacks = [EpochSeeds(config.seed), Validation(deployed, prepared, val_ids), non_finite]
    overfitting = None
    if config.defense == "fast":
        overfitting = CatastrophicOverfitting(
            robust_dice_check(deployed, prepared, val_ids or train_ids, config.adv_eps)
        )
        callbacks.append(overfitting)
    callbacks += logger + [checkpoint]
    if start < config.epochs:
        with surfaced_data_errors():
            trainer.fit(
                stream,
                epochs=config.epochs,
                initial_epoch=start,
                steps_per_epoch=steps,
                shuffle=False,
                callbacks=callbacks,
                verbose=verbose,
            )
    stopped = None
    if overfitting is not None and overfitting.collapse is not None:
        epoch, value, best = overfitting.collapse
        checkpoint.restore(trainer)  # the last good epoch
        stopped = (
            f"catastrophic overfitting at epoch {epoch}: robust Dice {value:.3f} after "
            f"{best:.3f}; training stopped, keeping the last good checkpoint"
        )
    if non_finite.where is not None:
        epoch, batch = non_finite.where
        raise TrainingError(
            f"non-finite loss at epoch {epoch + 1}, batch {batch + 1}; training stopped, "
            f"the last good checkpoint is in {checkpoint.dir}"
        )
    last = save_model_atomic(deployed, out / "last.keras", preprocessing)
    best_path = out / "best.keras"
    model_path = copy_atomic(best_path if best_path.is_file() else last, out / "model.keras")
    if finish:
        checkpoint.finish()
    return TrainResult(
        model_path, last, run_id, checkpoint.best["score"], config.epochs, stopped=stopped
    )


def _soft_labels(
    config: TrainConfig, prepared, train_ids, out: Path, log_epoch, load, verbose, strategy
):
    """The teacher's soft labels on the training volumes (training the teacher first if none is given).

    Returns:
        ``(folder, teacher)``: the labels are ``softmax(z / config.label_temperature)``,
        the teacher's own output at the temperature it was trained at.
    """
    if config.teacher:
        teacher = load(config.teacher)
    elif (out / "teacher.keras").is_file():
        teacher = load_model(out / "teacher.keras")
    else:
        teacher_config = dataclasses.replace(config, defense="none", teacher=None)
        teacher_out = out / "teacher"
        shutil.rmtree(teacher_out, ignore_errors=True)
        result = _fit_with_policy(
            teacher_config,
            prepared,
            teacher_out,
            "teacher",
            None,
            log_epoch,
            load,
            verbose,
            "teacher_",
            strategy,
            True,
        )
        copy_atomic(result.model_path, out / "teacher.keras")
        teacher = load_model(out / "teacher.keras")
    labels = write_soft_labels(
        teacher, prepared, train_ids, out / "soft_labels", config.label_temperature
    )
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
        raise InputError(
            f"batch_size {config.batch_size} is smaller than the {replicas} replicas; "
            "each replica needs at least one sample per step"
        )
    corruptions = None
    if config.corrupted_share > 0:
        from keras_advseg.data.corrupted import CorruptionAugmentation, prepared_spacing

        corruptions = CorruptionAugmentation(
            tuple(config.corruptions.split(",")), config.corrupted_share, prepared_spacing(prepared)
        )
    if config.model == "unet3d":
        dataset, samples = volume_dataset, len(train_ids)
    else:  # the 2-D UNet trains on every axial slice
        dataset, samples = slice_dataset, len(train_ids) * prepared.shape[2]
    steps = math.ceil(samples / config.batch_size)

    def make(seed):
        return dataset(
            prepared,
            ids=train_ids,
            batch_size=config.batch_size,
            shuffle=True,
            seed=seed,
            augment_data=config.augment,
            soft_labels=soft_labels,
            corruptions=corruptions,
        )

    stream = None
    for epoch in range(start, config.epochs):
        epoch_data = make(config.seed * 100_003 + epoch)
        if replicas > 1:
            epoch_data = epoch_data.unbatch().repeat().batch(config.batch_size, drop_remainder=True)
        epoch_data = epoch_data.take(steps)
        stream = epoch_data if stream is None else stream.concatenate(epoch_data)
    return steps, stream
