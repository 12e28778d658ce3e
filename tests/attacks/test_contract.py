"""The contract every registered attack keeps (keras-hub's ``run_layer_test`` idea).

Each test is parametrised over :data:`~keras_advseg.attacks.registry.ATTACKS` itself, so an
attack registered tomorrow runs it without an edit here: run through
:func:`~keras_advseg.attacks.registry.run_attack` with the family's common options, it returns
a batch of the input's shape and dtype, the same batch from the same seed (another one from
another seed exactly when its runner takes a seed), a perturbation inside its budget (the
l-inf or l2 ball of ``eps`` times each sample's intensity range; eps 0 is the identity), and
counts the input gradients it took as a network that counts them sees them. Its entry's facts
(iterative, gradients, losses, defaults, norm) agree with what its runner does.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import linf, span

from keras_advseg.attacks.iterative import all_label_target
from keras_advseg.attacks.losses import attack_loss
from keras_advseg.attacks.registry import ATTACK_LOSSES, ATTACKS, DEFAULT_ENSEMBLE, run_attack
from keras_advseg.config import VAFA_SETTINGS
from keras_advseg.models import unet3d

SIDE = 8  # VAFA's smallest block: the smallest volume every attack takes
COMMON = {"eps": 0.05, "steps": 2, "seed": 0}
"""The family's common options (``run_attack``): a small budget and two steps."""


class GradientCounter(keras.layers.Layer):
    """The identity, counting the samples whose input gradient is taken through it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False)

    def call(self, x):
        count = self.count

        @tf.custom_gradient
        def identity(t):
            def gradient(upstream):
                samples = tf.cast(tf.shape(upstream)[0], tf.int64)
                with tf.control_dependencies([count.assign_add(samples)]):
                    return tf.identity(upstream)

            return tf.identity(t), gradient

        return identity(x)


def runner_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters of ``name``'s runner: what it takes of the common options."""
    return dict(inspect.signature(ATTACKS.get(name).load()).parameters)


def option(name: str, key: str, fallback=None):
    """The value ``run_attack`` gives ``key``: the entry's default, else the runner's own."""
    entry = ATTACKS.get(name)
    if key in entry.defaults:
        return entry.defaults[key]
    parameter = runner_parameters(name).get(key)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return fallback
    return parameter.default


def takes(name: str, key: str) -> bool:
    return key in runner_parameters(name)


@pytest.fixture(scope="module")
def counted():
    """A tiny untrained 3-D UNet behind a :class:`GradientCounter`, and the counter."""
    keras.utils.set_random_seed(0)
    network = unet3d((SIDE, SIDE, SIDE, 4), base_filters=2, depth=2)
    inputs = keras.Input((SIDE, SIDE, SIDE, 4))
    counter = GradientCounter()
    return keras.Model(inputs, network(counter(inputs))), counter


@pytest.fixture(scope="module")
def batch():
    """Two samples on different intensity scales (relative budgets differ), one-hot labels."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, SIDE, SIDE, SIDE, 4)).astype("float32")
    x[1] = 3.0 * x[1] + 5.0
    y = tf.one_hot(rng.integers(0, 4, size=(2, SIDE, SIDE, SIDE)), 4).numpy()
    return x, y


@pytest.fixture(scope="module")
def attack(counted, batch):
    """``attack(name, **options) -> (x_adv, info, gradients counted)``, the common options
    filled in; a call with ``fresh=True`` runs again instead of reusing an earlier result."""
    model, counter = counted
    x, y = batch
    results = {}

    def run(name, fresh=False, **options):
        options = {**COMMON, **options}
        key = (name, tuple(sorted(options.items())))
        if fresh or key not in results:
            counter.count.assign(0)
            info = {}
            out = run_attack(name, model, x, y, info=info, **options)
            results[key] = (np.asarray(out), info, int(counter.count.numpy()))
        return results[key]

    return run


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_batch_keeps_the_inputs_shape_and_dtype(attack, batch, name):
    x, _ = batch
    x_adv, _, _ = attack(name)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype, (x_adv.shape, x_adv.dtype)
    assert np.isfinite(x_adv).all()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_same_seed_gives_the_same_batch(attack, name):
    first, _, _ = attack(name)
    again, _, _ = attack(name, fresh=True)
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_another_seed_changes_the_batch_exactly_when_the_runner_takes_a_seed(attack, name):
    first, _, _ = attack(name)
    other, _, _ = attack(name, seed=1)
    if takes(name, "seed"):
        assert not np.array_equal(other, first), f"{name} takes a seed but ignores it"
    else:
        np.testing.assert_array_equal(other, first)


def _vafa_budget(name, x, x_adv):
    """VAFA rounds each block-DCT coefficient (intensities scaled to 0-255) to a multiple of a
    table entry of at most ``q_max``: each coefficient moves at most ``q_max / 2``, and the DCT
    is orthonormal, so the root-mean-square change is at most ``q_max / 2 / 255`` of the range."""
    q_max = VAFA_SETTINGS[option(name, "setting")].q_max
    flat = (np.asarray(x_adv, "float64") - x).reshape(len(x), -1)
    rms = np.sqrt(np.mean(flat**2, axis=1))
    assert np.all(rms <= q_max / 2 / 255 * span(x) * (1 + 1e-4)), (rms, span(x))
    assert np.all(rms > 0)  # it did quantise


def _identity_budget(name, x, x_adv):
    np.testing.assert_array_equal(x_adv, x)


OWN_BUDGETS = {"none": _identity_budget, "vafa": _vafa_budget}
"""How the budget is measured for an attack whose runner takes no ``eps``."""


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_perturbation_stays_inside_the_budget_in_its_norm(attack, batch, name):
    x, _ = batch
    x_adv, _, _ = attack(name)
    if not takes(name, "eps"):
        assert name in OWN_BUDGETS, f"{name} takes no eps: say in OWN_BUDGETS what bounds it"
        OWN_BUDGETS[name](name, x, x_adv)
        return
    radius = COMMON["eps"] * span(x)  # eps is a fraction of each sample's intensity range
    rounding = 4 * np.spacing(np.abs(x).max())  # float32 rounding of x + delta
    norm = option(name, "norm", "linf")
    if norm == "linf":
        assert np.all(linf(x_adv, x) <= radius + rounding), (linf(x_adv, x), radius)
    else:
        assert norm == "l2", f"{name}: unknown norm {norm!r}"
        delta = (np.asarray(x_adv, "float64") - x).reshape(len(x), -1)
        length = np.sqrt((delta**2).sum(axis=1))
        assert np.all(length <= radius * (1 + 1e-5) + rounding * np.sqrt(delta.shape[1])), (
            length,
            radius,
        )
        assert np.all(linf(x_adv, x) < radius)  # an l2 step, not a sign step


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if takes(n, "eps")])
def test_eps_zero_is_the_identity(attack, batch, name):
    x, _ = batch
    x_adv, _, _ = attack(name, eps=0.0)
    np.testing.assert_array_equal(x_adv, x)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_gradients_counted_are_the_gradients_taken(attack, batch, name):
    x, _ = batch
    entry = ATTACKS.get(name)
    _, info, taken = attack(name)
    assert info["gradients"] == taken, (info, taken)
    if not entry.gradients:
        assert taken == 0
    elif not entry.iterative:
        assert taken == len(x)  # one gradient per sample


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if takes(n, "restarts")])
def test_the_gradients_of_every_restart_are_counted(attack, name):
    _, _, one = attack(name)
    _, info, taken = attack(name, restarts=2)
    assert info["gradients"] == taken, (info, taken)
    assert taken == 2 * one  # each restart takes the steps again


@pytest.mark.parametrize("name", ATTACKS.names())
def test_the_entry_states_what_its_runner_does(name):
    entry = ATTACKS.get(name)
    parameters = runner_parameters(name)
    assert entry.display and entry.description, name
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()), (
        f"{name}'s runner must take **_: run_attack passes every common option"
    )
    # iterative: it takes steps; losses: it takes loss=, and only the declared ones
    assert entry.iterative == ("steps" in parameters), name
    assert bool(entry.losses) == ("loss" in parameters), name
    assert set(entry.losses) <= set(ATTACK_LOSSES.names()), name
    assert set(entry.defaults) <= set(parameters), name
    if "loss" in parameters:
        assert option(name, "loss") in entry.losses, name
    assert option(name, "norm", "linf") in ("linf", "l2"), name
    for alias in entry.aliases:
        assert ATTACKS.canonical(alias, warn=False) == name


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if len(ATTACKS.get(n).losses) > 1])
def test_another_declared_loss_changes_the_batch(attack, name):
    other = next(loss for loss in ATTACKS.get(name).losses if loss != option(name, "loss"))
    assert not np.array_equal(attack(name, loss=other)[0], attack(name)[0]), other


def test_names_and_displays_are_unique():
    displays = [entry.display for entry in ATTACKS]
    assert len(set(displays)) == len(displays), displays
    assert set(DEFAULT_ENSEMBLE) <= set(ATTACKS.names(ensemble=True))


TARGETS = {"targeted-ifgsm": all_label_target}
"""What each targeted attack aims at (its runner's target, from the labels)."""


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_targeted_attack_moves_towards_its_target(attack, counted, batch, name):
    """Its loss against the target falls below the clean input's and below the untargeted
    i-FGSM's at the same budget."""
    x, y = batch
    model, _ = counted
    target = TARGETS[name](y)
    loss = attack_loss(option(name, "loss", "dice"))

    def distance(inputs):
        return loss(target, model(inputs, training=False)).numpy()

    towards = distance(attack(name)[0])
    assert np.all(towards < distance(x)), (towards, distance(x))
    assert np.all(towards < distance(attack("ifgsm")[0])), (towards, distance(attack("ifgsm")[0]))
