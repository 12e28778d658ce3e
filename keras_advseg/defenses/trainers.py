"""Training with and without defenses, as Keras 3 ``train_step`` overrides.

Each trainer wraps a segmentation network (logits out) and trains it with the
paper's soft Dice loss at a temperature (eq. 4-7). ``trainer.network`` is the
deployable model: save it, attack it, export it.

All trainers compute their loss through ``self.compute_loss`` and apply
gradients with ``self.optimizer.apply``, so under a ``tf.distribute`` strategy
the loss is scaled for the global batch exactly as in Keras' own step.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_advseg import keras_private
from keras_advseg.attacks.core import per_sample_scale
from keras_advseg.attacks.fgsm import fgsm_step
from keras_advseg.config import ADVERSARIAL_MODES
from keras_advseg.losses import SoftDiceLoss, soft_dice_loss


@keras.saving.register_keras_serializable(package="keras_advseg")
class SegmentationTrainer(keras.Model):
    """Plain training (no defense) of ``network`` with the soft Dice loss at ``temperature``.

    With soft targets (the teacher's ``softmax(z / T)``) and ``temperature=T``
    this is the distilled network's training (eq. 7); deploy its
    ``network`` at T = 1.

    Args:
        network: A model returning logits.
        temperature: Softmax temperature of the training loss (eq. 4).
    """

    def __init__(self, network: keras.Model, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive. Received: temperature={temperature}")
        self.network = network
        self.temperature = float(temperature)

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, **kwargs):
        """Compiles with :class:`SoftDiceLoss` at the trainer's temperature unless ``loss`` is given."""
        super().compile(
            optimizer=optimizer, loss=loss or SoftDiceLoss(temperature=self.temperature), **kwargs
        )

    def _update(self, x, y, sample_weight=None):
        """One optimiser step on ``(x, y)``; returns the predictions and the loss."""
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return y_pred, loss

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred, loss = self._update(x, y, sample_weight)
        return self._report(loss, x, y, y_pred, sample_weight)

    def _report(self, loss, x, y, y_pred, sample_weight=None):
        """Tracks the (unscaled) loss and the compiled metrics, as Keras' own step does."""
        tracker = keras_private.loss_tracker(self)
        tracker.update_state(
            keras_private.unscale_loss_for_distribution(loss), sample_weight=tf.shape(x)[0]
        )
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces logs across workers with MEAN over axis 0, which a scalar lacks
            # (keras-team/keras#20585); shape (1,) reduces to the scalar mean.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' first-batch build, working under MultiWorkerMirroredStrategy (keras-team/keras#20585)."""
        return keras_private.build_from_local_replica(
            self, iterator, data_batch, super()._maybe_symbolic_build
        )

    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_advseg")
class AdversarialTrainer(SegmentationTrainer):
    """FGSM adversarial training (eq. 8-9).

    ``joint``: one update on ``beta * L(x, y) + (1 - beta) * L(x + eps * sign(grad_x L(x, y)), y)``,
    the input gradient taken from the clean term's own (training-mode) forward
    and backward pass, so a step costs two forward and two backward passes.
    ``alternating``: the paper's memory-saving variant -- an update on the
    adversarial batch, then an update on the original batch.
    The adversarial examples are built from the current weights, outside the
    weight tape; ``eps`` is relative to each sample's intensity range (as the attacks).

    Args:
        network: A model returning logits.
        eps: Perturbation budget (paper: 0.01, 0.05, 0.1).
        beta: Weight of the clean loss in ``joint`` mode (paper: 0.5).
        mode: ``"joint"`` or ``"alternating"``.
        temperature: Softmax temperature of the loss.
    """

    def __init__(
        self,
        network,
        eps: float = 0.05,
        beta: float = 0.5,
        mode: str = "joint",
        temperature=1.0,
        **kwargs,
    ):
        super().__init__(network, temperature=temperature, **kwargs)
        if eps < 0:
            raise ValueError(f"eps must be >= 0. Received: eps={eps}")
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1]. Received: beta={beta}")
        if mode not in ADVERSARIAL_MODES:
            raise ValueError(f"mode must be one of {ADVERSARIAL_MODES}. Received: mode={mode!r}")
        self.eps, self.beta, self.mode = float(eps), float(beta), mode

    def adversarial_examples(self, x, y):
        """``x + eps * range(x) * sign(grad_x L(x, y))`` at the current weights (eq. 9)."""
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(
                soft_dice_loss(y, self(x, training=False), temperature=self.temperature)
            )
        grad = tf.stop_gradient(tape.gradient(loss, x))
        return tf.stop_gradient(fgsm_step(x, grad, eps=self.eps))

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = self.adversarial_examples(x, y)
        if self.mode == "alternating":
            self._update(x_adv, y, sample_weight)
            y_pred, loss = self._update(x, y, sample_weight)
            return self._report(loss, x, y, y_pred, sample_weight)
        # One backward pass of the clean loss gives both the clean weight
        # gradients and the input gradient that makes x_adv (eq. 9); x_adv is
        # then a constant for the adversarial term: 2 forward + 2 backward passes.
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            tape.watch(x)
            y_pred = self(x, training=True)
            clean = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            scaled_clean = self.optimizer.scale_loss(clean)
        grad_x, *clean_grads = tape.gradient(scaled_clean, [x] + variables)
        x_adv = tf.stop_gradient(fgsm_step(x, grad_x, eps=self.eps))
        with tf.GradientTape() as tape:
            y_adv = self(x_adv, training=True)
            adversarial = self.compute_loss(
                x=x_adv, y=y, y_pred=y_adv, sample_weight=sample_weight, training=True
            )
            scaled_adversarial = self.optimizer.scale_loss(adversarial)
        adversarial_grads = tape.gradient(scaled_adversarial, variables)
        grads = [_weighted(self.beta, c, a) for c, a in zip(clean_grads, adversarial_grads)]
        self.optimizer.apply(grads, variables)
        loss = self.beta * clean + (1.0 - self.beta) * adversarial
        return self._report(loss, x, y, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps, "beta": self.beta, "mode": self.mode}


@keras.saving.register_keras_serializable(package="keras_advseg")
class NoiseTrainer(SegmentationTrainer):
    """Noise augmentation, the paper's comparison: uniform noise in the L-inf ball.

    Per batch, "first trained with the perturbed images and then with the
    clean images": an update on ``x + U(-r, r) * range(x)``, then one on ``x``.

    Args:
        network: A model returning logits.
        radius: Noise radius relative to each sample's intensity range (paper: 0.01).
        seed: Seed of the noise.
        temperature: Softmax temperature of the loss.
    """

    def __init__(self, network, radius: float = 0.01, seed: int = 0, temperature=1.0, **kwargs):
        super().__init__(network, temperature=temperature, **kwargs)
        if radius < 0:
            raise ValueError(f"radius must be >= 0. Received: radius={radius}")
        self.radius, self.seed = float(radius), int(seed)
        self.noise_generator = keras.random.SeedGenerator(seed)

    def noisy(self, x):
        """``x`` plus uniform noise of relative radius ``radius``."""
        noise = keras.random.uniform(tf.shape(x), -1.0, 1.0, seed=self.noise_generator)
        return x + per_sample_scale(x, self.radius, relative=True) * noise

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._update(self.noisy(x), y, sample_weight)
        y_pred, loss = self._update(x, y, sample_weight)
        return self._report(loss, x, y, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "radius": self.radius, "seed": self.seed}


def _weighted(beta, clean, adversarial):
    """``beta * clean + (1 - beta) * adversarial`` for a gradient that may be None."""
    if clean is None or adversarial is None:
        return clean if adversarial is None else adversarial
    return beta * clean + (1.0 - beta) * adversarial
