"""Options shared by the ``advseg`` commands, defined once (the pattern of MLflow's ``cli_args``).

Each option's choices and default come from :mod:`keras_advseg.config` or a registry, and its
help text states the default's value. Renamed options and values stay accepted for one
release: hidden, with a deprecation line on standard error.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from keras_advseg import config as cfg
from keras_advseg.errors import InputError
from keras_advseg.registry import Registry

MAX_SEED = 2**31 - 1
"""The largest seed any option accepts (TensorFlow's and NumPy's seeds are 32-bit)."""


def deprecation(old: str, new: str) -> None:
    """Writes the one-line deprecation notice of a renamed option or value to standard error."""
    click.echo(
        f"advseg: {old} is deprecated and will be removed in the next release; use {new}",
        err=True,
    )


def renamed_notice(old: str, new: str) -> None:
    """Writes the one-line notice of a renamed command to standard error: ``old`` still works
    for one release."""
    click.echo(f"`{old}` is now `{new}`; the old spelling goes in the next release", err=True)


class LiveChoice(click.Choice):
    """A choice among names the code defines, read each time they are needed (parsing, help):
    a new entry shows up by itself, and the module that defines them is imported only then.

    Args:
        names: Returns the current names, e.g. ``lambda: tuple(CARD_PLANS)``.
    """

    def __init__(self, names: Callable[[], Iterable[str]]):
        self.names = names
        super().__init__(())

    @property
    def choices(self):
        return tuple(self.names())

    @choices.setter
    def choices(self, _):  # click.Choice.__init__ assigns it; ``names`` is the source
        pass


class RegistryChoice(LiveChoice):
    """A choice among a registry's current names, read when the command runs: an entry
    registered after import is offered too; a deprecated alias is accepted with a notice."""

    def __init__(self, registry: Registry, **facts):
        self.registry, self.facts = registry, facts
        super().__init__(lambda: registry.names(**facts))

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value in self.registry.aliases:
            current = self.registry.aliases[value]
            deprecation(f"{self.registry.family} {value!r}", repr(current))
            value = current
        return super().convert(value, param, ctx)


class RegistryList(RegistryChoice):
    """Several of a registry's names in one option, comma-separated (``fgsm,pgd-dice``): each
    checked as :class:`RegistryChoice` checks one; the help lists the current names."""

    name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            items = list(value)
        else:
            items = [item.strip() for item in str(value).split(",") if item.strip()]
        if not items:
            self.fail(f"name at least one {self.registry.family}. Received: {value!r}", param, ctx)
        return tuple(RegistryChoice.convert(self, item, param, ctx) for item in items)

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(self.choices) + "],..."


def names_option(name: str, registry: Registry, default, help_text: str, *, old: str, **facts):
    """``name`` (e.g. ``--attacks``): a comma-separated list of ``registry``'s names
    (:class:`RegistryList`), with the repeated option ``old`` of the last release (``--attack
    fgsm --attack pgd``) hidden and still accepted for one release, with a notice.

    Args:
        default: The names used when neither is given.
        facts: Which of the registry's names qualify (as :meth:`Registry.names`).
    """
    dest = name.removeprefix("--").replace("-", "_")

    def decorate(fn):
        fn = renamed_option(
            old,
            name,
            dest,
            notice=renamed_notice,
            multiple=True,
            type=RegistryChoice(registry, **facts),
        )(fn)
        return click.option(
            name,
            dest,
            type=RegistryList(registry, **facts),
            default=",".join(default),
            show_default=True,
            help=help_text,
        )(fn)

    return decorate


class RenamedChoice(click.Choice):
    """A choice whose values of the last release (``renamed``: ``{old: new}``) are still accepted
    for one release, with the one-line notice (:func:`renamed_notice`); the help and the error
    messages list only the current values.

    Args:
        choices: The current values.
        renamed: ``{old value: its current name}``.
        option: The option's name, for the notice (``--defense``).
    """

    def __init__(self, choices, renamed: dict[str, str], option: str):
        super().__init__(choices)
        self.renamed, self.option = dict(renamed), option

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value in self.renamed:
            renamed_notice(f"{self.option} {value}", f"{self.option} {self.renamed[value]}")
            value = self.renamed[value]
        return super().convert(value, param, ctx)


def renamed_option(old: str, new: str, dest: str, *, notice=deprecation, **kwargs):
    """A hidden option ``old`` kept for one release: its value replaces ``dest``'s (the option
    now called ``new``) with a one-line notice (``notice(old, new)``: :func:`deprecation`, or
    :func:`renamed_notice`)."""
    hidden = f"deprecated_{dest}"

    def decorate(fn):
        fn = click.option(
            old, hidden, hidden=True, default=None, help=f"Deprecated: use {new}.", **kwargs
        )(fn)

        @functools.wraps(fn)
        def wrapper(*args, **values):
            old_value = values.pop(hidden)
            if old_value not in (None, ()):  # () : a repeatable option not given
                notice(old, new)
                values[dest] = old_value
            return fn(*args, **values)

        return wrapper

    return decorate


def seed_option(help_text: str, default: int = 0, name: str = "--seed"):
    """A seed in ``[0, 2^31 - 1]``, checked before any work."""
    return click.option(
        name,
        type=click.IntRange(0, MAX_SEED),
        default=default,
        show_default=True,
        help=help_text,
    )


def tracking_options(experiment_default: str | None = cfg.DEFAULT_EXPERIMENT, note: str = ""):
    """``--tracking-uri`` and ``--experiment``, shared by every tracked command."""

    def decorate(fn):
        fn = click.option(
            "--experiment",
            default=experiment_default,
            show_default=experiment_default is not None,
            help="MLflow experiment name" + (f" [{note}]" if note else "") + ".",
        )(fn)
        return click.option(
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            default=cfg.DEFAULT_TRACKING_URI,
            show_default=True,
            help="MLflow tracking store: a database URI, a folder, or an http(s) tracking "
            "server. Also read from MLFLOW_TRACKING_URI.",
        )(fn)

    return decorate


def split_option(help_text: str, choices: tuple[str, ...] = ("test", "train", "all")):
    """``--split``: which subjects of the prepared cache a command reads [test]."""
    return click.option("--split", type=click.Choice(choices), default="test", help=help_text)


FRACTION = click.FloatRange(0, 1, max_open=True)
"""The type of an option that is a share: a number in [0, 1)."""


def fraction_option(name: str, help_text: str, **kwargs):
    """An option that is a share in [0, 1) (``kwargs``: as :func:`click.option`)."""
    return click.option(name, type=FRACTION, help=help_text, **kwargs)


def preset_option(presets, help_text: str):
    """``--preset``: one of ``presets``' names, quick by default."""
    return click.option(
        "--preset",
        type=click.Choice(list(presets)),
        default="quick",
        show_default=True,
        help=help_text,
    )


def out_option(help_text: str):
    """``--out``: the folder a command writes (``help_text`` names what it writes there)."""
    return click.option(
        "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help=help_text
    )


def data_option(help_text: str, *, required: bool = True, **kwargs):
    """``--data``: a dataset folder or a prepared cache (``kwargs``: as :func:`click.option`)."""
    return click.option(
        "--data", type=click.Path(path_type=Path), required=required, help=help_text, **kwargs
    )


def count_option(name: str, default, help_text: str, *, minimum: int = 1, **kwargs):
    """An integer option counting something (steps, restarts, samples, subjects), at least
    ``minimum`` (``kwargs``: as :func:`click.option`, e.g. ``show_default=True``)."""
    return click.option(
        name, type=click.IntRange(min=minimum), default=default, help=help_text, **kwargs
    )


def subjects_option(verb: str, default: int):
    """``--subjects N``: the command works on the first N subjects of ``--split`` (0: all)."""
    return count_option(
        "--subjects", default, f"{verb} the first N subjects of the split (0: all).", minimum=0
    )


def reference_option(help_text: str):
    """``--reference``: an undefended model (file, run id or runs:/ URI) to compare against."""
    return click.option("--reference", "reference_ref", default=None, help=help_text)


def run_name_option(default_name: str):
    """``--run-name``: the MLflow run's name, ``default_name`` when omitted."""
    return click.option("--run-name", help=f"MLflow run name [{default_name}].")


def model_and_data(out_help: str):
    """``MODEL``, ``--data`` and ``--out``: shared by the commands that attack a model."""

    def decorate(fn):
        fn = out_option(out_help)(fn)
        fn = data_option(
            "Prepared cache, or a raw dataset (prepared into OUT/prepared at the model's "
            "input size)."
        )(fn)
        return click.argument("model_ref", metavar="MODEL")(fn)

    return decorate


def parse_ints(
    text: str, option: str, *, low: int, high: int, limit: int = 100, example: str
) -> tuple[int, ...]:
    """An integer list option: ``"1,3"``, a range ``"1-3"`` or both (``"1-3,7"``) -> distinct
    integers in ``[low, high]``, in the order given.

    Args:
        text: The option's value.
        option: The option's name, for the message.
        low, high: The range every value must lie in.
        limit: The most values the list may hold.
        example: What the message shows as a valid value (``0,1,2,3,4 or 0-4``).

    Raises:
        InputError: not such a list, a repeated value, or more than ``limit`` values.
    """
    expected = f"{option}: expected distinct integers in [{low}, {high}] like {example}"
    values: list[int] = []
    try:
        for part in str(text).split(","):
            start, _, stop = part.strip().partition("-")
            first, last = int(start), int(stop) if stop else int(start)
            if first < low or last < first or last > high or last - first >= limit:
                raise ValueError
            values += range(first, last + 1)
    except ValueError:
        raise InputError(f"{expected}. Received: {text!r}") from None
    if len(set(values)) != len(values) or len(values) > limit:
        raise InputError(f"{expected} (at most {limit}). Received: {text!r}")
    return tuple(values)


def parse_seeds(text: str, option: str = "--seeds", limit: int = 100) -> tuple[int, ...]:
    """``"0,1,2"`` or ``"0-2"`` (or both, ``"0-2,7"``) -> (0, 1, 2[, 7]): distinct seeds in
    ``[0, 2^31 - 1]`` (:func:`parse_ints`).

    Raises:
        InputError: not such a list, a repeated seed, or more than ``limit`` seeds.
    """
    return parse_ints(text, option, low=0, high=MAX_SEED, limit=limit, example="0,1,2,3,4 or 0-4")


def parse_severities(text: str, option: str = "--severities") -> tuple[int, ...]:
    """``"1-5"``, ``"3"`` or ``"1,3,5"`` -> the corruption severities, in increasing order
    (:func:`parse_ints` over 1-5; 0, the clean scan, is always scored).

    Raises:
        InputError: not such a list, or a repeated severity.
    """
    return tuple(sorted(parse_ints(text, option, low=1, high=5, example="1,3,5 or 1-5")))


def parse_floats(
    text: str | None, option: str, *, low: float = 0.0, high: float = 1.0, limit: int = 1000
) -> tuple[float, ...]:
    """``"0.05,0.1"`` -> (0.05, 0.1); ``"0:0.01:0.001"`` -> 0, 0.001, ..., 0.01 (inclusive).

    Args:
        text: The option's value.
        option: The option's name, for the message.
        low, high: The range every value must lie in.
        limit: The most values a list or range may hold.

    Raises:
        InputError: not finite numbers, outside ``[low, high]``, or a bad or too long range.
    """
    if not text:
        return ()
    expected = (
        f"{option}: expected numbers in [{low:g}, {high:g}] like 0.05,0.1 or a range "
        "START:STOP:STEP"
    )
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0 or stop < start:
                raise ValueError
            count = (stop - start) / step
            if not math.isfinite(count) or count + 1 > limit:
                many = f"{count + 1:.0f}" if math.isfinite(count) else "too many"
                raise InputError(f"{option}: the range {text!r} has {many} values; at most {limit}")
            count = int(round(count))
            values = tuple(round(start + i * step, 10) for i in range(count + 1))
        else:
            values = tuple(float(p) for p in text.split(","))
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{expected}, got {text!r}") from None
    if len(values) > limit:
        raise InputError(f"{option}: {len(values)} values; at most {limit}")
    if not all(math.isfinite(v) and low <= v <= high for v in values):
        raise InputError(f"{expected}, got {text!r}")
    return values


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"64"`` -> (64, 64, 64); ``"64,64,48"`` -> (64, 64, 48) (``64x64x48``, the last
    release's spelling, with a notice).

    Raises:
        InputError: not one or three positive integers.
    """
    if "x" in text:
        renamed_notice(f"--shape {text}", f"--shape {text.replace('x', ',')}")
    try:
        sizes = [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3 or min(sizes) < 1:
        raise InputError(
            f"--shape: expected one or three positive integers like 128 or 128,128,96, got {text!r}"
        )
    return tuple(sizes)
