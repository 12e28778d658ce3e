"""Certified segmentation by randomized smoothing (Fischer, Baader & Vechev 2021, SegCertify),
for volumes, with certificates per BraTS region (Anani et al. 2024, adaptive hierarchical
certification).

The smoothed model labels a voxel with the class the network gives it most often under
Gaussian noise ``N(0, sigma^2)`` on the whole input. :func:`certify` draws ``n0`` noisy copies
to guess each voxel's class ``c``, then ``n`` more to count how often the network gives ``c``;
a one-sided binomial test says whether ``P(c) > tau``, with Holm's (or Bonferroni's)
correction over every voxel at family-wise error ``alpha``. A voxel that passes keeps ``c`` for
every input within l2 distance ``R = sigma * Phi^-1(tau)``; the others abstain. With
probability at least ``1 - alpha`` no certified voxel is wrong about the smoothed model.

The same ``n`` samples also certify each region (WT, TC, ET) as its own smoothed binary
segmentation: a voxel is in region ``r`` in a sample when its label is one of ``r``'s; the
side (in or out) follows the guessed class ``c`` (in iff ``c`` is one of ``r``'s, the parent of
the top class in the hierarchy), and the test counts the samples on that side, with one Holm
correction over all ``3 d`` voxel-region tests. A voxel unsure between necrotic core and
enhancing tumour abstains in the class-wise certificate but can still be certified in the
tumour core.

Units: ``sigma`` and ``R`` are in the model's input units, fixed once for the smoothed model
(:class:`SmoothedModel`): the inputs are z-scored per sequence, so ``sigma = 0.5`` is noise of
half a tissue standard deviation in every sequence, whatever volume is certified. The noise
never depends on the input (randomized smoothing's bound needs the same noise at ``x`` and at
``x + delta``). An l2 ball of radius ``R`` contains the l-infinity ball of radius
``R / sqrt(d)`` (``d`` the number of input values), the budget to put beside an attack's eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf
from scipy import stats

from keras_advseg.certification.scores import ABSTAIN
from keras_advseg.certification.settings import (
    CertifyConfig,
    check_correction,
    check_settings,
)
from keras_advseg.errors import InputError
from keras_advseg.vocabulary import CORRECTIONS, REGION_CLASS_INDICES, REGIONS

SIGMA_UNIT = "standardised input units (multiples of each sequence's tissue standard deviation)"
"""What ``sigma`` and the radius are measured in (recorded with every certificate)."""

_STAGES = {"select": 0, "estimate": 1}


@dataclass
class Certificate:
    """What :func:`certify` returns for one volume.

    Attributes:
        labels: ``(X, Y, Z)`` uint8 BraTS labels of the certified voxels, :data:`ABSTAIN`
            elsewhere (class-wise, SegCertify: Holm over the ``d`` voxels).
        smoothed: ``(X, Y, Z)`` uint8: the smoothed model's (uncertified) labels, the most
            frequent class among the ``n`` counted samples.
        p_values: ``(X, Y, Z)`` one-sided binomial p-values of the guessed classes.
        regions: ``{"wt", "tc", "et"}`` -> ``(X, Y, Z)`` uint8 region certificates: 1 certified
            inside the region, 0 certified outside, :data:`ABSTAIN` (Holm over all ``3 d``
            voxel-region tests).
        region_smoothed: ``{"wt", "tc", "et"}`` -> ``(X, Y, Z)`` bool: the smoothed binary
            segmentations (inside in more than half of the ``n`` samples).
        region_p_values: ``{"wt", "tc", "et"}`` -> ``(X, Y, Z)`` p-values of the guessed sides.
        sigma: Noise standard deviation in the model's input units (:data:`SIGMA_UNIT`).
        radius: Certified l2 radius ``sigma * Phi^-1(tau)``, in the model's input units.
        radius_raw: The radius in each sequence's raw intensity, ``radius * std_c`` (a
            perturbation of sequence ``c`` alone), or None when the standardisation is unknown.
        linf: The l-infinity budget the l2 certificate covers, ``radius / sqrt(d)`` (input
            units).
        n, n0, tau, alpha, correction: The test's settings.
        seed: The seed of the noise.
    """

    labels: np.ndarray
    smoothed: np.ndarray
    p_values: np.ndarray
    regions: dict[str, np.ndarray]
    region_smoothed: dict[str, np.ndarray]
    region_p_values: dict[str, np.ndarray]
    sigma: float
    radius: float
    radius_raw: tuple[float, ...] | None
    linf: float
    n: int
    n0: int
    tau: float
    alpha: float
    correction: str
    seed: int

    @property
    def certified(self) -> np.ndarray:
        """Boolean ``(X, Y, Z)``: the voxels with a class-wise certificate."""
        return self.labels != ABSTAIN

    def abstain_rate(self, mask: np.ndarray | None = None) -> float:
        """The share of voxels (inside ``mask`` when given) the class-wise certificate abstains
        on."""
        return _share(~self.certified, mask)

    def region_abstain_rate(self, region: str, mask: np.ndarray | None = None) -> float:
        """The share of voxels (inside ``mask`` when given) whose ``region`` certificate
        abstains.

        Raises:
            InputError: an unknown region.
        """
        if region not in self.regions:
            raise InputError(f"region must be one of {REGIONS}. Received: region={region!r}")
        return _share(self.regions[region] == ABSTAIN, mask)


def _share(flags: np.ndarray, mask: np.ndarray | None) -> float:
    if mask is not None:
        return float(flags[mask].mean()) if mask.any() else 0.0
    return float(flags.mean())


def binomial_p_values(counts, n: int, tau: float) -> np.ndarray:
    """One-sided p-values of ``H0: p <= tau`` against ``p > tau`` for ``counts`` successes of
    ``n`` (what ``scipy.stats.binomtest(k, n, tau, alternative="greater")`` gives), vectorised."""
    counts = np.asarray(counts)
    return stats.binom.sf(counts - 1, n, tau)


def rejected(p_values: np.ndarray, alpha: float, correction: str = "holm") -> np.ndarray:
    """Which hypotheses are rejected at family-wise error ``alpha`` over all of ``p_values``.

    Holm's step-down procedure rejects the ``k`` smallest p-values while
    ``p_(i) <= alpha / (m - i)`` (i = 0, 1, ...); Bonferroni rejects ``p <= alpha / m``. Holm
    rejects everything Bonferroni does, and often more. Both are monotone: lowering some
    p-values never withdraws a rejection.

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


def _check_std(input_std) -> tuple[float, ...] | None:
    if input_std is None:
        return None
    values = tuple(float(v) for v in np.ravel(input_std))
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(
            f"input_std must be positive numbers, one per sequence. Received: "
            f"input_std={input_std!r}"
        )
    return values


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

    def _step(self, x, sigma, stream, start, used):
        # each copy its own seed (stream, sample index): the noise does not depend on the batch
        noise = tf.stack(
            [
                tf.random.stateless_normal(tf.shape(x)[1:], seed=tf.stack([stream, start + i]))
                for i in range(self.batch_size)
            ]
        )
        logits = self.logits(x + sigma * noise, training=False)
        classes = tf.one_hot(tf.argmax(logits, axis=-1), tf.shape(logits)[-1], dtype=tf.int32)
        keep = tf.cast(tf.range(self.batch_size) < used, tf.int32)
        keep = tf.reshape(keep, [-1] + [1] * (len(x.shape) - 1))
        return tf.reduce_sum(classes * keep, axis=0)

    def counts(self, x, sigma: float, samples: int, stream: int) -> np.ndarray:
        total = None
        sigma = tf.constant(sigma, tf.float32)
        stream = tf.constant(stream, tf.int64)
        for start in range(0, samples, self.batch_size):
            used = tf.constant(min(self.batch_size, samples - start), tf.int32)
            counted = self.step(x, sigma, stream, tf.constant(start, tf.int64), used)
            total = counted if total is None else total + counted
        return total.numpy()


def _stream(seed: int, stage: str) -> int:
    """The noise stream of one stage: ``2 seed`` selects, ``2 seed + 1`` estimates."""
    if stage not in _STAGES:
        raise InputError(f"stage must be one of {tuple(_STAGES)}. Received: stage={stage!r}")
    return 2 * int(seed) + _STAGES[stage]


@dataclass(frozen=True)
class SmoothedModel:
    """A network smoothed by Gaussian noise of a fixed standard deviation, with the settings of
    its certificates: what :func:`certify` certifies, stored once so that every volume (and
    every perturbed copy of it) is certified under the same noise.

    Attributes:
        model: A Keras model returning logits for ``(B, X, Y, Z, C)`` volumes.
        sigma: Noise standard deviation in the model's input units (:data:`SIGMA_UNIT`): the
            inputs are z-scored per sequence, so 0.5 is half a tissue standard deviation.
        n: Samples counted for the test (SegCertify: 100 to 1000).
        n0: Samples that choose each voxel's class.
        tau: The probability the chosen class must provably exceed (>= 0.5).
        alpha: Family-wise error of each certificate (over the voxels, and over the voxels and
            regions).
        correction: ``"holm"`` or ``"bonferroni"``.
        batch_size: Noisy copies per forward pass; None: the most that fit in memory
            (:func:`~keras_advseg.certification.memory.choose_batch`). The certificate does not
            depend on it: each noisy copy is drawn from its own seed.
        input_std: Each sequence's standard deviation in raw intensity (the z-score's divisor,
            the model's stored preprocessing), to state the radius in raw intensity; None when
            unknown.

    Raises:
        InputError: a setting out of range.
    """

    model: Any = field(repr=False, compare=False)
    sigma: float
    n: int = CertifyConfig.n  # the defaults of advseg certify, written once
    n0: int = CertifyConfig.n0
    tau: float = CertifyConfig.tau
    alpha: float = CertifyConfig.alpha
    correction: str = CertifyConfig.correction
    batch_size: int | None = CertifyConfig.batch_size
    input_std: tuple[float, ...] | None = None

    def __post_init__(self):
        check_settings(self.sigma, self.n, self.n0, self.tau, self.alpha, self.batch_size)
        check_correction(self.correction)
        for name in ("sigma", "tau", "alpha"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("n", "n0"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.batch_size is not None:  # no batch larger than the samples it draws
            object.__setattr__(self, "batch_size", min(int(self.batch_size), max(self.n, self.n0)))
        object.__setattr__(self, "input_std", _check_std(self.input_std))

    def _checked(self, x) -> np.ndarray:
        """``x`` as one float32 volume ``(1, X, Y, Z, C)`` that the network takes, with finite
        values.

        Raises:
            InputError: naming what was expected.
        """
        x = _one_volume(x)
        expected = _input_channels(self.model)
        if expected is not None and x.shape[-1] != expected:
            raise InputError(
                f"x must have {expected} channels (the model's input). Received: shape "
                f"{x.shape[1:]}"
            )
        if not np.all(np.isfinite(x)):
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            raise InputError(
                f"x holds {bad} non-finite value(s) (NaN or inf): no voxel of it can be "
                "certified; repair or mask them first"
            )
        return x

    @property
    def radius(self) -> float:
        """The certified l2 radius ``sigma * Phi^-1(tau)`` in the model's input units."""
        return self.sigma * float(stats.norm.ppf(self.tau))

    @property
    def radius_raw(self) -> tuple[float, ...] | None:
        """The radius in each sequence's raw intensity, ``radius * std_c`` (None: unknown)."""
        if self.input_std is None:
            return None
        return tuple(self.radius * s for s in self.input_std)

    def settings(self) -> dict:
        """The smoothed model as JSON: sigma with its unit, the radius, the test's settings."""
        return {
            "sigma": self.sigma,
            "sigma_unit": SIGMA_UNIT,
            "radius": self.radius,
            "radius_raw": None if self.radius_raw is None else list(self.radius_raw),
            "input_std": None if self.input_std is None else list(self.input_std),
            "n": self.n,
            "n0": self.n0,
            "tau": self.tau,
            "alpha": self.alpha,
            "correction": self.correction,
        }

    def noise(self, shape, seed: int, stage: str = "estimate") -> np.ndarray:
        """The noise :meth:`certify` adds with ``seed``: ``(samples, X, Y, Z, C)`` float32 for
        ``stage`` ``"select"`` (``n0`` samples) or ``"estimate"`` (``n``). It depends on the
        shape, the seed and sigma only, never on the input's values.

        Args:
            shape: The volume's shape ``(X, Y, Z, C)``.
            seed: The certificate's seed.
            stage: ``"select"`` or ``"estimate"``.

        Returns:
            The noise of each sample, in the model's input units.

        Raises:
            InputError: an unknown stage.
        """
        stream = _stream(seed, stage)
        samples = self.n0 if stage == "select" else self.n
        shape = [int(s) for s in shape]
        return self.sigma * np.stack(
            [
                tf.random.stateless_normal(shape, seed=tf.constant([stream, i], tf.int64)).numpy()
                for i in range(samples)
            ]
        )

    def batch_for(self, x) -> int:
        """The noisy copies per forward pass for volumes like ``x``: :attr:`batch_size`, or the
        most that fit in memory when it is None.

        Raises:
            InputError: :attr:`batch_size` does not fit in memory (naming the largest that does).
        """
        from keras_advseg.certification.memory import choose_batch

        shape = np.shape(x)[-4:]
        return choose_batch(self.model, shape, max(self.n, self.n0), self.batch_size)

    def counts(self, x, seed: int, stage: str = "estimate") -> np.ndarray:
        """How often the network gives each class to each voxel of ``x`` (one volume) plus
        :meth:`noise`: ``(X, Y, Z, K)`` int counts summing to ``n0`` or ``n``.

        Raises:
            InputError: an unknown stage or a bad shape.
        """
        tensor = tf.constant(self._checked(x))
        samples = self.n0 if stage == "select" else self.n
        # no copies beyond the stage's samples (n0 is often below the batch)
        sampler = _cached_sampler(self.model, min(self.batch_for(tensor), samples))
        return sampler.counts(tensor, self.sigma, samples, _stream(seed, stage))

    def certify(self, x, seed: int | None = None) -> Certificate:
        """Certifies every voxel of one volume, class-wise and per region.

        Args:
            x: One volume ``(X, Y, Z, C)`` or a batch of one, in the model's input units.
            seed: Seed of the noise (None: a fresh one each call).

        Returns:
            A :class:`Certificate`.

        Raises:
            InputError: a bad input shape, or ``n`` too small to certify any voxel.
        """
        x = self._checked(x)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        voxels = int(np.prod(x.shape[1:4]))
        if self.tau**self.n > self.alpha / voxels:
            needed = math.ceil(math.log(self.alpha / voxels) / math.log(self.tau))
            raise InputError(
                f"n={self.n} cannot certify any voxel: even {self.n} of {self.n} votes leave "
                f"p = tau^n = {self.tau**self.n:.2g} above alpha / voxels = "
                f"{self.alpha / voxels:.2g}; use n >= {needed}"
            )
        guess_counts = self.counts(x, seed, "select")
        counts = self.counts(x, seed, "estimate")
        guess = np.argmax(guess_counts, axis=-1)
        hits = np.take_along_axis(counts, guess[..., None], axis=-1)[..., 0]
        p_values = binomial_p_values(hits, self.n, self.tau)
        certified = rejected(p_values, self.alpha, self.correction)
        regions, region_smoothed, region_p = region_certificates(
            counts, guess, n=self.n, tau=self.tau, alpha=self.alpha, correction=self.correction
        )
        return Certificate(
            labels=np.where(certified, _brats(guess), ABSTAIN).astype(np.uint8),
            smoothed=_brats(np.argmax(counts, axis=-1)),
            p_values=p_values,
            regions=regions,
            region_smoothed=region_smoothed,
            region_p_values=region_p,
            sigma=self.sigma,
            radius=self.radius,
            radius_raw=self.radius_raw,
            linf=self.radius / math.sqrt(x[0].size),
            n=self.n,
            n0=self.n0,
            tau=self.tau,
            alpha=self.alpha,
            correction=self.correction,
            seed=int(seed),
        )


def region_certificates(
    counts: np.ndarray,
    guess: np.ndarray,
    *,
    n: int,
    tau: float,
    alpha: float,
    correction: str = "holm",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Certifies each BraTS region as its own smoothed binary segmentation, from the class counts
    of the ``n`` estimation samples.

    A voxel is inside region ``r`` in a sample when its class is one of ``r``'s, so the samples
    inside are the sum of those classes' counts. The guessed side is the guessed class's
    (inside iff ``guess`` is one of ``r``'s: chosen from the ``n0`` selection samples only, as
    the test needs); the one-sided binomial test asks whether that side's probability exceeds
    ``tau``, with one correction over all voxel-region tests. Because the side's count is at
    least the guessed class's, every region p-value is at most the class-wise one.

    Args:
        counts: ``(X, Y, Z, 4)`` class counts of the ``n`` estimation samples.
        guess: ``(X, Y, Z)`` class indices (0-3) chosen from the selection samples.
        n, tau, alpha, correction: As :class:`SmoothedModel`'s.

    Returns:
        ``(regions, smoothed, p_values)``, each ``{"wt", "tc", "et"} -> (X, Y, Z)``: uint8 1
        (certified inside), 0 (certified outside) or :data:`ABSTAIN`; bool smoothed region
        (inside in more than half of the samples); the p-values.
    """
    counts, guess = np.asarray(counts), np.asarray(guess)
    sides, p_values, smoothed = {}, {}, {}
    for region in REGIONS:
        classes = list(REGION_CLASS_INDICES[region])
        inside = counts[..., classes].sum(axis=-1)
        sides[region] = np.isin(guess, classes)
        p_values[region] = binomial_p_values(np.where(sides[region], inside, n - inside), n, tau)
        smoothed[region] = 2 * inside > n
    passed = rejected(np.stack([p_values[r] for r in REGIONS]), alpha, correction)
    regions = {
        r: np.where(passed[i], sides[r], ABSTAIN).astype(np.uint8) for i, r in enumerate(REGIONS)
    }
    return regions, smoothed, p_values


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
    batch_size: int | None = None,
    seed: int | None = None,
    input_std=None,
) -> Certificate:
    """Certifies every voxel of one volume by randomized smoothing (SegCertify's CERTIFY), and
    each BraTS region: ``SmoothedModel(model, sigma, ...).certify(x, seed)``.

    Args:
        model: A Keras model returning logits for ``(B, X, Y, Z, C)`` volumes.
        x: One volume ``(X, Y, Z, C)`` or a batch of one, in the model's input units.
        sigma: Noise standard deviation in the model's input units (:data:`SIGMA_UNIT`), the
            same for every volume.
        n: Samples counted for the test (SegCertify: 100 to 1000).
        n0: Samples that choose each voxel's class.
        tau: The probability the chosen class must provably exceed (>= 0.5); the radius grows
            with it, and so does the number of abstentions.
        alpha: Family-wise error over all voxels (and over all voxels and regions).
        correction: ``"holm"`` or ``"bonferroni"``.
        batch_size: Noisy copies per forward pass (None: the most that fit in memory); the
            certificate does not depend on it.
        seed: Seed of the noise (None: a fresh one each call).
        input_std: Each sequence's raw-intensity standard deviation, for ``radius_raw``.

    Returns:
        A :class:`Certificate`.

    Raises:
        InputError: a bad setting or input shape, or a ``batch_size`` that does not fit in
            memory (naming the largest that does).
    """
    smoothed = SmoothedModel(
        model,
        sigma=sigma,
        n=n,
        n0=n0,
        tau=tau,
        alpha=alpha,
        correction=correction,
        batch_size=batch_size,
        input_std=input_std,
    )
    return smoothed.certify(x, seed=seed)


def _input_channels(model) -> int | None:
    """The channels a Keras model takes (None: unknown, e.g. a plain callable)."""
    try:
        return model.input_shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _one_volume(x) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputError(f"x must hold real numbers. Received: dtype {x.dtype}")
    x = x.astype(np.float32)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[0] != 1:
        raise InputError(f"x must be one volume (X, Y, Z, C). Received: shape {x.shape}")
    return x


def _brats(index: np.ndarray) -> np.ndarray:
    """Class index -> BraTS label (3 -> 4)."""
    return np.where(index == 3, 4, index).astype(np.uint8)


def _cached_sampler(model, batch_size: int) -> _Sampler:
    from keras_advseg.attacks.core import cached

    return cached(model, ("smoothing", int(batch_size)), lambda: _Sampler(model, batch_size))
