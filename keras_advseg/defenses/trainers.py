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
from keras_advseg.attacks.fast_gradient import fgsm_step
from keras_advseg.config import ADVERSARIAL_MODES
from keras_advseg.losses import SoftDiceLoss, soft_dice_loss


@keras.saving.register_keras_serializable(package="keras_advseg")
class SegmentationTrainer(keras_private.LocalReplicaBuild, keras.Model):
    """Plain training (no defense) of ``network`` with the soft Dice loss at ``temperature``.

    Its first-batch build works under ``MultiWorkerMirroredStrategy``
    (:class:`~keras_advseg.keras_private.LocalReplicaBuild`).

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
        """Compiles with :class:`SoftDiceLoss` at the trainer's temperature unless ``loss`` is given.

        The optimizer's variables are created here, from the network's weights: Keras on
        TensorFlow otherwise creates them inside the first traced training step, which makes
        TensorFlow trace that step twice (the first ``fit`` took about twice as long to start).
        """
        super().compile(
            optimizer=optimizer, loss=loss or SoftDiceLoss(temperature=self.temperature), **kwargs
        )
        if self.network.built and not self.optimizer.built:
            with self.distribute_strategy.scope():  # mirrored where the trainer's weights are
                self.optimizer.build(self.trainable_variables)

    def _forward_loss(self, x, y, sample_weight=None):
        """The training-mode forward pass on ``x`` and its compiled loss: ``(y_pred, loss)``."""
        y_pred = self(x, training=True)
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        return y_pred, loss

    def input_gradient(self, x, y):
        """``grad_x L(x, y)`` of the soft Dice loss at the current weights (inference mode,
        outside the weight tape): the direction the adversarial defenses step in."""
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(
                soft_dice_loss(y, self(x, training=False), temperature=self.temperature)
            )
        return tf.stop_gradient(tape.gradient(loss, x))

    def _update(self, x, y, sample_weight=None):
        """One optimiser step on ``(x, y)``; returns the predictions and the loss."""
        with tf.GradientTape() as tape:
            y_pred, loss = self._forward_loss(x, y, sample_weight)
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
        return tf.stop_gradient(fgsm_step(x, self.input_gradient(x, y), eps=self.eps))

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
            y_pred, clean = self._forward_loss(x, y, sample_weight)
            scaled_clean = self.optimizer.scale_loss(clean)
        grad_x, *clean_grads = tape.gradient(scaled_clean, [x] + variables)
        x_adv = tf.stop_gradient(fgsm_step(x, grad_x, eps=self.eps))
        with tf.GradientTape() as tape:
            _, adversarial = self._forward_loss(x_adv, y, sample_weight)
            scaled_adversarial = self.optimizer.scale_loss(adversarial)
        adversarial_grads = tape.gradient(scaled_adversarial, variables)
        grads = [_weighted(self.beta, c, a) for c, a in zip(clean_grads, adversarial_grads)]
        self.optimizer.apply(grads, variables)
        loss = self.beta * clean + (1.0 - self.beta) * adversarial
        return self._report(loss, x, y, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps, "beta": self.beta, "mode": self.mode}


class _NoiseAugmentation(SegmentationTrainer):
    """A trainer whose inputs get seeded noise of a non-negative size, the argument ``size_name``
    (``radius`` or ``sigma``), stored and configured under that name."""

    def __init__(self, network, size_name: str, size: float, seed: int, temperature, **kwargs):
        super().__init__(network, temperature=temperature, **kwargs)
        if size < 0:
            raise ValueError(f"{size_name} must be >= 0. Received: {size_name}={size}")
        self._size_name = size_name
        setattr(self, size_name, float(size))
        self.seed = int(seed)
        self.noise_generator = keras.random.SeedGenerator(seed)

    def get_config(self):
        return {
            **super().get_config(),
            self._size_name: getattr(self, self._size_name),
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_advseg")
class NoiseTrainer(_NoiseAugmentation):
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
        super().__init__(network, "radius", radius, seed, temperature, **kwargs)

    def noisy(self, x):
        """``x`` plus uniform noise of relative radius ``radius``."""
        noise = keras.random.uniform(tf.shape(x), -1.0, 1.0, seed=self.noise_generator)
        return x + per_sample_scale(x, self.radius, relative=True) * noise

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._update(self.noisy(x), y, sample_weight)
        y_pred, loss = self._update(x, y, sample_weight)
        return self._report(loss, x, y, y_pred, sample_weight)


@keras.saving.register_keras_serializable(package="keras_advseg")
class GaussianNoiseTrainer(_NoiseAugmentation):
    """Gaussian noise augmentation (Cohen et al. 2019): the training that makes randomized
    smoothing certify (:mod:`keras_advseg.certification`).

    Every update is on ``x + N(0, sigma^2)``, ``sigma`` in the model's input units (standardised
    intensities: tissue standard deviations), the units of the certificate's sigma: the network
    learns to classify the noisy copies the smoothed classifier votes with. Train at the
    ``sigma`` you will certify at.

    Args:
        network: A model returning logits.
        sigma: Noise standard deviation in the model's input units.
        seed: Seed of the noise.
        temperature: Softmax temperature of the loss.
    """

    def __init__(self, network, sigma: float = 0.5, seed: int = 0, temperature=1.0, **kwargs):
        super().__init__(network, "sigma", sigma, seed, temperature, **kwargs)

    def noisy(self, x):
        """``x`` plus Gaussian noise of standard deviation ``sigma`` (input units)."""
        noise = keras.random.normal(tf.shape(x), seed=self.noise_generator)
        return x + self.sigma * noise

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        noisy = self.noisy(x)
        y_pred, loss = self._update(noisy, y, sample_weight)
        return self._report(loss, noisy, y, y_pred, sample_weight)


@keras.saving.register_keras_serializable(package="keras_advseg")
class PGDTrainer(SegmentationTrainer):
    """Madry-style adversarial training: K-step PGD from a random start (Madry et al. 2018).

    Each step crafts ``x_adv`` by ``steps`` signed-gradient steps of size ``alpha`` on the soft
    Dice loss, from a uniform random point of the eps-ball, projected after every step, at
    the current weights (inference mode, outside the weight tape); then one update on eq. 9's
    ``beta * L(x, y) + (1 - beta) * L(x_adv, y)``. ``beta = 0`` is Madry's adversarial-only
    objective and saves the clean forward and backward pass.

    Args:
        network: A model returning logits.
        eps: Budget, relative to each sample's intensity range.
        steps: PGD iterations K (``--adv-steps``: 3 in ``quick``, 7 in ``paper``).
        alpha: Step size relative to the range; default ``2.5 * eps / steps``.
        beta: Weight of the clean loss (eq. 9).
        seed: Seed of the random starts.
        temperature: Softmax temperature of the loss.
    """

    def __init__(
        self,
        network,
        eps: float = 0.05,
        steps: int = 3,
        alpha: float | None = None,
        beta: float = 0.5,
        seed: int = 0,
        temperature=1.0,
        **kwargs,
    ):
        super().__init__(network, temperature=temperature, **kwargs)
        if eps < 0 or steps < 1 or not 0 <= beta <= 1 or (alpha is not None and alpha < 0):
            raise ValueError(
                "eps and alpha must be >= 0, steps >= 1 and beta in [0, 1]. Received: "
                f"eps={eps}, steps={steps}, alpha={alpha}, beta={beta}"
            )
        self.eps, self.steps, self.beta, self.seed = float(eps), int(steps), float(beta), int(seed)
        self.alpha = None if alpha is None else float(alpha)

    def random_start(self, x):
        """A uniform random point of the eps-ball around ``x`` (see :meth:`sample_noise`)."""
        noise = self.sample_noise(x, tf.random.stateless_uniform, minval=-1.0, maxval=1.0)
        return x + per_sample_scale(x, self.eps, relative=True) * noise

    def sample_noise(self, x, draw, **kwargs):
        """Noise per sample, from ``(seed + the sample's bits, optimiser step)``.

        Drawn per sample rather than per batch, so that a batch split over replicas
        (``tf.distribute``) starts every sample where one device would.
        """
        step = tf.cast(self.optimizer.iterations, tf.int32) if self.optimizer else 0

        def one(x_i):
            key = tf.bitcast(tf.reduce_sum(x_i), tf.int32) + self.seed
            return draw(tf.shape(x_i), tf.stack([key, step]), **kwargs)

        return tf.map_fn(one, x)

    def adversarial_examples(self, x, y, start=None):
        """K projected signed-gradient steps on the soft Dice loss from ``start`` (default: a
        random start)."""
        return self._projected_steps(x, lambda x_k: self.input_gradient(x_k, y), start)

    def _projected_steps(self, x, gradient, start=None):
        """``steps`` ascents ``x_k + alpha * sign(gradient(x_k))``, each projected onto the ball."""
        eps = per_sample_scale(x, self.eps, relative=True)
        alpha = self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps
        step = per_sample_scale(x, alpha, relative=True)
        x_k = tf.clip_by_value(self.random_start(x) if start is None else start, x - eps, x + eps)
        for _ in range(self.steps):
            x_k = tf.clip_by_value(x_k + step * tf.sign(gradient(x_k)), x - eps, x + eps)
        return tf.stop_gradient(x_k)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = self.adversarial_examples(x, y)
        return self._mixed_update(x, x_adv, y, sample_weight, self.beta)

    def _mixed_update(self, x, x_adv, y, sample_weight, beta):
        """One update on ``beta * L(x) + (1 - beta) * L(x_adv)`` (the clean pass skipped at 0)."""
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            y_adv, adversarial = self._forward_loss(x_adv, y, sample_weight)
            if beta > 0:
                y_pred, clean = self._forward_loss(x, y, sample_weight)
                loss = beta * clean + (1.0 - beta) * adversarial
            else:
                y_pred, loss = y_adv, adversarial
            scaled = self.optimizer.scale_loss(loss)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._report(loss, x, y, y_pred, sample_weight)

    def get_config(self):
        return {
            **super().get_config(),
            "eps": self.eps,
            "steps": self.steps,
            "alpha": self.alpha,
            "beta": self.beta,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_advseg")
class FastTrainer(PGDTrainer):
    """ "Fast is better than free" (Wong, Rice & Kolter 2020): FGSM from a random start.

    ``x_adv = clip(x + delta + alpha * sign(grad L(x + delta)), x +- eps)`` with ``delta``
    uniform in the eps-ball and ``alpha = 1.25 * eps``: one input gradient per step. The
    update is eq. 9's with ``beta`` (default 0, as Wong et al.: one more pass otherwise).
    Catastrophic overfitting (robust Dice collapsing within an epoch) is watched by
    :class:`~keras_advseg.training.callbacks.CatastrophicOverfitting`.
    """

    def __init__(self, network, eps: float = 0.05, alpha=None, beta: float = 0.0, **kwargs):
        kwargs.pop("steps", None)
        super().__init__(
            network,
            eps=eps,
            steps=1,
            alpha=1.25 * eps if alpha is None else alpha,
            beta=beta,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("steps")
        return config


@keras.saving.register_keras_serializable(package="keras_advseg")
class TradesTrainer(PGDTrainer):
    """TRADES for segmentation (Zhang et al. 2019).

    Loss: ``L(x, y) + beta * mean over voxels KL(softmax(z(x)) || softmax(z(x_adv)))``, the
    first term the compiled segmentation loss (soft Dice, or Dice + CE), ``x_adv`` from K
    signed-gradient steps ascending the KL from ``x + 0.001 * N(0, 1)`` (TRADES' start),
    projected onto the eps-ball, at the current weights.

    Args:
        beta: Weight of the KL term (TRADES' 1/lambda; 6 in the paper).
        Others: as :class:`PGDTrainer`.
    """

    def __init__(self, network, eps: float = 0.05, steps: int = 3, beta: float = 6.0, **kwargs):
        if beta < 0:
            raise ValueError(f"beta must be >= 0. Received: beta={beta}")
        super().__init__(network, eps=eps, steps=steps, beta=0.0, **kwargs)
        self.beta = float(beta)

    def random_start(self, x):
        return x + 0.001 * self.sample_noise(x, tf.random.stateless_normal)

    def adversarial_examples(self, x, y, start=None):
        """K steps ascending the voxel-mean KL from the clean softmax (``y`` is not used)."""
        clean = tf.stop_gradient(tf.nn.softmax(self(x, training=False) / self.temperature))

        def gradient(x_k):
            with tf.GradientTape() as tape:
                tape.watch(x_k)
                kl = tf.reduce_sum(voxel_kl(clean, self(x_k, training=False), self.temperature))
            return tf.stop_gradient(tape.gradient(kl, x_k))

        return self._projected_steps(x, gradient, start)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = self.adversarial_examples(x, y)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            y_pred, natural = self._forward_loss(x, y, sample_weight)
            p_clean = tf.nn.softmax(y_pred / self.temperature)
            robust = tf.reduce_mean(voxel_kl(p_clean, self(x_adv, training=True), self.temperature))
            # compute_loss divides by the replicas (the global batch's mean); so must this term
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = natural + self.beta * robust / replicas
            scaled = self.optimizer.scale_loss(loss)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._report(loss, x, y, y_pred, sample_weight)


def voxel_kl(p, logits, temperature: float = 1.0):
    """Per sample, the voxel-mean ``KL(p || softmax(logits / T))`` (TRADES' robust term).

    Returns:
        ``(B,)``.
    """
    log_q = tf.nn.log_softmax(logits / temperature)
    kl = tf.reduce_sum(p * (tf.math.log(tf.maximum(p, 1e-12)) - log_q), axis=-1)
    return tf.reduce_mean(tf.reshape(kl, [tf.shape(kl)[0], -1]), axis=1)


def _weighted(beta, clean, adversarial):
    """``beta * clean + (1 - beta) * adversarial`` for a gradient that may be None."""
    if clean is None or adversarial is None:
        return clean if adversarial is None else adversarial
    return beta * clean + (1.0 - beta) * adversarial
