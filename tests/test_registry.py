"""The registries: one name per attack, a new attack by registration alone, deprecated spellings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from support import one_hot, tiny3d

from keras_advseg import config as cfg
from keras_advseg.attacks.registry import ATTACK_LOSSES, ATTACKS, run_attack
from keras_advseg.cli import main
from keras_advseg.errors import InputError
from keras_advseg.registry import Registry


def test_a_registry_maps_names_and_aliases():
    registry = Registry("widget")
    registry.register("big-one", display="Big one", target=len, aliases=("big",))

    @registry.register("small", display="Small", iterative=False)
    def small():
        return 1

    assert registry.names() == ("big-one", "small") and registry.names(iterative=False) == (
        "small",
    )
    assert registry.get("small").load() is small and registry.display("big-one") == "Big one"
    with pytest.warns(DeprecationWarning, match="'big' is deprecated; use 'big-one'"):
        assert registry.canonical("big") == "big-one"
    with pytest.raises(InputError, match="widget must be one of big-one, small. Received: 'x'"):
        registry.get("x")
    with pytest.raises(InputError, match="already registered"):
        registry.register("big", display="again", target=len)
    registry.unregister("big-one")
    assert "big" not in registry and registry.names() == ("small",)


def test_every_attack_has_one_name_and_a_loadable_runner():
    for entry in ATTACKS:
        assert entry.name == entry.name.lower() and " " not in entry.name
        assert callable(entry.load()), entry.name
        assert set(entry.losses) <= set(ATTACK_LOSSES.names())
    for entry in ATTACK_LOSSES:
        assert callable(entry.load()), entry.name
    # the spellings of the last release still resolve, to one current name each
    assert dict(ATTACKS.aliases) == {
        "tifgsm": "targeted-ifgsm",
        "pgd": "pgd-dice",
        "apgd-balanced": "apgd-balanced-masked-ce",
    }
    assert cfg.STUDIES["paper"].attacks == ("fgsm", "ifgsm", "targeted-ifgsm", "pgd-dice")


@pytest.fixture
def toy_attack():
    """An attack that adds eps times the sign of (labels' class index - 1.5): registered here
    alone, with no other change anywhere."""
    calls = []

    def run_toy(model, x, y, *, eps, **_):
        calls.append(eps)
        direction = np.sign(np.argmax(np.asarray(y), -1)[..., None] - 1.5).astype("float32")
        return np.asarray(x) + eps * direction

    ATTACKS.register("toy", display="Toy attack", target=run_toy, ensemble=True)
    yield calls
    ATTACKS.unregister("toy")


def test_a_registered_attack_is_offered_everywhere(toy_attack, tmp_path):
    # the CLI's --attacks choices (evaluate and audit), read when the command runs
    result = CliRunner().invoke(main, ["evaluate", "--help"], terminal_width=200)
    assert "toy" in result.output
    result = CliRunner().invoke(main, ["audit", "--help"], terminal_width=200)
    assert "toy" in result.output
    # the configurations accept it, the ensemble too
    assert cfg.EvalConfig(attacks=("toy",), ensemble=("toy", "segpgd")).ensemble[0] == "toy"
    # the report's name for it
    assert cfg.attack_display("toy") == "Toy attack"
    # the worst case runs it as a member of its ensemble
    from keras_advseg.attacks.ensemble import worst_case

    model = tiny3d()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16, 4)).astype("float32")
    y = one_hot(rng.choice([0, 1, 2, 4], size=(2, 16, 16, 16)))
    info = {}
    _, found_by = worst_case(
        model, x, y, eps=0.05, steps=1, attacks=("toy",), stop_dice=None, info=info
    )
    assert toy_attack == [0.05] and info["per_attack"] == {"toy": 2}
    assert set(found_by) <= {"toy", "none"}
    assert np.array_equal(run_attack("toy", model, x, y, eps=0.0), x)


def test_deprecated_spellings_still_work_with_a_notice():
    with pytest.warns(DeprecationWarning, match="'tifgsm' is deprecated"):
        config = cfg.EvalConfig(attacks=("tifgsm", "pgd"))
    assert config.attacks == ("targeted-ifgsm", "pgd-dice")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current names warn about nothing
        cfg.EvalConfig(attacks=("targeted-ifgsm",), ensemble=("apgd-balanced-masked-ce",))
    # on the command line: the value is converted and a one-line notice goes to stderr
    choice = main.commands["evaluate"].params
    attack = next(p for p in choice if p.name == "attacks")
    assert attack.type.convert("tifgsm,fgsm", attack, None) == ("targeted-ifgsm", "fgsm")
    assert "tifgsm" not in attack.type.choices  # hidden from --help


def test_renamed_options_are_hidden_and_still_accepted(tmp_path):
    runner = CliRunner()
    for command, old in (
        ("train", "--adv-eps"),
        ("compare", "--attack-eps"),
        ("export", "--temperature"),
    ):
        text = runner.invoke(main, [command, "--help"]).output
        assert old not in text
    # export's old --temperature still sets the exported softmax's temperature
    model = tiny3d()
    model.save(tmp_path / "m.keras")
    result = runner.invoke(
        main, ["export", str(tmp_path / "m.keras"), str(tmp_path / "out"), "--temperature", "2"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "--temperature is deprecated" in result.output and "--output-temperature" in result.output
    )


def test_attacks_check_their_inputs_with_one_clear_line():
    from keras_advseg.attacks import fgsm, worst_case
    from keras_advseg.data import label_map, one_hot_labels

    model = tiny3d()
    x = np.zeros((16, 16, 16, 4), "float32")
    labels = np.zeros((1, 16, 16, 16), "uint8")
    with pytest.raises(InputError, match=r"batch of volumes \(B, X, Y, Z, C\); got shape"):
        fgsm(model, x, one_hot_labels(labels), eps=0.05)
    with pytest.raises(
        InputError, match=r"labels must be one-hot \(1, 16, 16, 16, 4\); got \(1, 16"
    ):
        fgsm(model, x[None], labels, eps=0.05)
    with pytest.raises(InputError, match="one-hot"):
        worst_case(model, x[None], labels, eps=0.05, steps=1, attacks=("segpgd",))
    # one helper each way between a BraTS label map (0/1/2/4) and one-hot
    maps = np.array([[[[0, 1, 2, 4]]]], "uint8")
    assert np.array_equal(label_map(one_hot_labels(maps)), maps)
    with pytest.raises(InputError, match=r"values \(0, 1, 2, 4\); got values \[0, 3\]"):
        one_hot_labels(np.array([0, 3]))
