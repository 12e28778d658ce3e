"""Certified segmentation by randomized smoothing (Fischer, Baader & Vechev 2021, SegCertify),
for volumes.

The smoothed model labels a voxel with the class the network gives it most often under
Gaussian noise on the whole input. :func:`certify` draws ``n0`` noisy copies to guess each
voxel's class ``c``, then ``n`` more to count how often the network gives ``c``; a one-sided
binomial test says whether ``P(c) > tau``, with Holm's (or Bonferroni's) correction over every
voxel at family-wise error ``alpha``. A voxel that passes keeps ``c`` for every input within
l2 distance ``R = sigma * Phi^-1(tau)``; the others abstain. With probability at least
``1 - alpha`` no certified voxel is wrong about the smoothed model.

Units are the attacks': ``sigma`` and ``R`` are relative to each input's intensity range
(``max - min``), so ``sigma = 0.25`` adds noise of a quarter of the range. An l2 ball of
radius ``R`` contains the l-infinity ball of radius ``R / sqrt(d)`` (``d`` the number of input
values), the budget to put beside an attack's eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy import stats

from keras_advseg.errors import InputError

ABSTAIN = 255
"""The label of a voxel the certificate abstains on (BraTS labels are 0, 1, 2, 4)."""

CORRECTIONS = ("holm", "bonferroni")


@dataclass
class Certificate:
    """What :func:`certify` returns for one volume.

    Attributes:
        labels: ``(X, Y, Z)`` uint8 BraTS labels of the certified voxels, :data:`ABSTAIN`
            elsewhere.
        smoothed: ``(X, Y, Z)`` uint8: the smoothed model's (uncertified) labels, the most
            frequent class among the ``n`` counted samples.
        p_values: ``(X, Y, Z)`` one-sided binomial p-values of the guessed classes.
        sigma: Noise standard deviation, relative to the input's intensity range.
        sigma_abs: The same in the input's units.
        radius: Certified l2 radius ``sigma * Phi^-1(tau)``, relative to the intensity range.
        radius_abs: The same in the input's units.
        linf: The l-infinity budget the l2 certificate covers, ``radius / sqrt(d)`` (relative).
        n, n0, tau, alpha, correction: The test's settings.
    """

    labels: np.ndarray
    smoothed: np.ndarray
    p_values: np.ndarray
    sigma: float
    sigma_abs: float
    radius: float
    radius_abs: float
    linf: float
    n: int
    n0: int
    tau: float
    alpha: float
    correction: str

    @property
    def certified(self) -> np.ndarray:
        """Boolean ``(X, Y, Z)``: the voxels with a certificate."""
        return self.labels != ABSTAIN

    def abstain_rate(self, mask: np.ndarray | None = None) -> float:
        """The share of voxels (inside ``mask`` when given) that abstain."""
        abstained = ~self.certified
        if mask is not None:
            return float(abstained[mask].mean()) if mask.any() else 0.0
        return float(abstained.mean())


def binomial_p_values(counts, n: int, tau: float) -> np.ndarray:
    """One-sided p-values of ``H0: p <= tau`` against ``p > tau`` for ``counts`` successes of
    ``n`` (what ``scipy.stats.binomtest(k, n, tau, alternative="greater")`` gives), vectorised."""
    counts = np.asarray(counts)
    return stats.binom.sf(counts - 1, n, tau)


def rejected(p_values: np.ndarray, alpha: float, correction: str = "holm") -> np.ndarray:
    """Which hypotheses are rejected at family-wise error ``alpha`` over all of ``p_values``.

    Holm's step-down procedure rejects the ``k`` smallest p-values while
    ``p_(i) <= alpha / (m - i)`` (i = 0, 1, ...); Bonferroni rejects ``p <= alpha / m``. Holm
    rejects everything Bonferroni does, and often more.

    Raises:
        InputError: unknown correction.
    """
    if correction not in CORRECTIONS:
        raise InputError(f"correction must be one of {CORRECTIONS}. Received: {correction!r}")
    flat = np.asarray(p_values, np.float64).ravel()
    m = flat.size
    if correction == "bonferroni":
        return (flat <= alpha / m).reshape(np.shape(p_values))
    order = np.argsort(flat, kind="stable")
    thresholds = alpha / (m - np.arange(m))
    passing = flat[order] <= thresholds
    k = m if passing.all() else int(np.argmin(passing))
    result = np.zeros(m, bool)
    result[order[:k]] = True
    return result.reshape(np.shape(p_values))


def check_settings(sigma, n, n0, tau, alpha, batch_size) -> None:
    """Raises InputError naming the first setting out of range."""
    checks = (
        ("sigma", sigma, sigma > 0 and math.isfinite(sigma), "a positive number"),
        ("n", n, int(n) == n and n >= 1, "an integer >= 1"),
        ("n0", n0, int(n0) == n0 and n0 >= 1, "an integer >= 1"),
        ("tau", tau, 0.5 <= tau < 1, "in [0.5, 1)"),
        ("alpha", alpha, 0 < alpha < 1, "in (0, 1)"),
        (
            "batch_size",
            batch_size,
            int(batch_size) == batch_size and batch_size >= 1,
            "an integer >= 1",
        ),
    )
    for name, value, ok, expected in checks:
        if not ok:
            raise InputError(f"{name} must be {expected}. Received: {name}={value!r}")


class _Sampler:
    """Class counts of the network under Gaussian noise, ``batch_size`` copies per forward pass,
    counted on the device: one traced step per model and input shape."""

    def __init__(self, model, batch_size: int):
        from keras_advseg.attacks.core import logits_function

        self.logits = logits_function(model)
        self.batch_size = int(batch_size)
        self.step = tf.function(self._step)

    def _functions(self):
        return (self.step,)

    def _step(self, x, sigma_abs, seed, used):
        shape = tf.concat([[self.batch_size], tf.shape(x)[1:]], axis=0)
        noise = tf.random.stateless_normal(shape, seed=seed)
        logits = self.logits(x + sigma_abs * noise, training=False)
        classes = tf.one_hot(tf.argmax(logits, axis=-1), tf.shape(logits)[-1], dtype=tf.int32)
        keep = tf.cast(tf.range(self.batch_size) < used, tf.int32)
        keep = tf.reshape(keep, [-1] + [1] * (len(x.shape) - 1))
        return tf.reduce_sum(classes * keep, axis=0)

    def counts(self, x, sigma_abs: float, samples: int, stream: int) -> np.ndarray:
        total = None
        sigma = tf.constant(sigma_abs, tf.float32)
        for batch, start in enumerate(range(0, samples, self.batch_size)):
            used = tf.constant(min(self.batch_size, samples - start), tf.int32)
            seed = tf.constant([stream, batch], tf.int64)
            counted = self.step(x, sigma, seed, used)
            total = counted if total is None else total + counted
        return total.numpy()


def certify(
    model,
    x,
    *,
    sigma: float,
    n: int = 100,
    n0: int = 10,
    tau: float = 0.75,
    alpha: float = 0.001,
    correction: str = "holm",
    batch_size: int = 8,
    seed: int | None = None,
) -> Certificate:
    """Certifies every voxel of one volume by randomized smoothing (SegCertify's CERTIFY).

    Args:
        model: A Keras model returning logits for ``(B, X, Y, Z, C)`` volumes.
        x: One volume ``(X, Y, Z, C)`` or a batch of one.
        sigma: Noise standard deviation, relative to the volume's intensity range.
        n: Samples counted for the test (SegCertify: 100 to 1000).
        n0: Samples that choose each voxel's class.
        tau: The probability the chosen class must provably exceed (>= 0.5); the radius grows
            with it, and so does the number of abstentions.
        alpha: Family-wise error over all voxels.
        correction: ``"holm"`` or ``"bonferroni"``.
        batch_size: Noisy copies per forward pass.
        seed: Seed of the noise (None: a fresh one each call).

    Returns:
        A :class:`Certificate`.

    Raises:
        InputError: a bad setting or input shape.
    """
    check_settings(sigma, n, n0, tau, alpha, batch_size)
    x = np.asarray(x, np.float32)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[0] != 1:
        raise InputError(f"x must be one volume (X, Y, Z, C). Received: shape {x.shape}")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    voxels = int(np.prod(x.shape[1:4]))
    if tau ** int(n) > alpha / voxels:
        needed = math.ceil(math.log(alpha / voxels) / math.log(tau))
        raise InputError(
            f"n={n} cannot certify any voxel: even {n} of {n} votes leave p = tau^n = "
            f"{tau ** int(n):.2g} above alpha / voxels = {alpha / voxels:.2g}; use n >= {needed}"
        )
    span = float(x.max() - x.min())
    sigma_abs = sigma * span
    sampler = _cached_sampler(model, batch_size)
    tensor = tf.constant(x)
    guess_counts = sampler.counts(tensor, sigma_abs, int(n0), stream=2 * int(seed))
    counts = sampler.counts(tensor, sigma_abs, int(n), stream=2 * int(seed) + 1)
    guess = np.argmax(guess_counts, axis=-1)
    hits = np.take_along_axis(counts, guess[..., None], axis=-1)[..., 0]
    p_values = binomial_p_values(hits, int(n), tau)
    certified = rejected(p_values, alpha, correction)
    labels = np.where(certified, _brats(guess), ABSTAIN).astype(np.uint8)
    radius = sigma * float(stats.norm.ppf(tau))
    return Certificate(
        labels=labels,
        smoothed=_brats(np.argmax(counts, axis=-1)),
        p_values=p_values,
        sigma=float(sigma),
        sigma_abs=sigma_abs,
        radius=radius,
        radius_abs=radius * span,
        linf=radius / math.sqrt(x[0].size),
        n=int(n),
        n0=int(n0),
        tau=float(tau),
        alpha=float(alpha),
        correction=correction,
    )


def _brats(index: np.ndarray) -> np.ndarray:
    """Class index -> BraTS label (3 -> 4)."""
    return np.where(index == 3, 4, index).astype(np.uint8)


def _cached_sampler(model, batch_size: int) -> _Sampler:
    from keras_advseg.attacks.core import cached

    return cached(model, ("smoothing", int(batch_size)), lambda: _Sampler(model, batch_size))


def certified_dice(labels: np.ndarray, certificate_labels: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC and ET of a certified label map, an abstaining voxel counting as wrong (as
    SegCertify counts it): a voxel of the region that abstains is a miss, and no abstaining
    voxel is ever in a predicted region."""
    from keras_advseg.metrics import brats_dice

    predicted = np.where(certificate_labels == ABSTAIN, 0, certificate_labels).astype(np.uint8)
    dice = brats_dice(labels, predicted)
    return {region: float(value) for region, value in dice.items()}
