"""Registries: one table of names per family (attacks, attack losses, and the families to come).

A registry maps a name to an :class:`Entry`: the function that implements it, the name a
report prints, and the facts the rest of the package asks about it (accepted losses,
defaults, whether it iterates, whether it needs gradients). Everything that offers a
choice asks the registry: ``config``'s validation, the CLI's ``click.Choice`` lists, the
worst-case ensemble, the evaluation, the audit and the reports. A new member is one module
plus one :meth:`Registry.register` call, as timm's ``@register_model``
(``timm/models/_registry.py``).

The registry itself imports no TensorFlow: an entry's function may be given as
``"package.module:function"`` and is imported on first use, so that ``advseg --help`` and
the commands that do not compute (``data``, ``compare``) start without TensorFlow.

Old spellings stay reachable as aliases for one release: :meth:`Registry.canonical`
returns the current name and warns with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from keras_advseg.errors import InputError


@dataclass(frozen=True)
class Entry:
    """One registered member of a family.

    Attributes:
        name: The one name used in Python, the CLI, MLflow keys, CSV files and reports.
        display: What tables and figures print (``"targeted i-FGSM"``).
        target: The implementing callable, or ``"module:function"`` imported on first use.
        description: One line for ``--help`` and the documentation's vocabulary table.
        losses: The loss names it accepts (an attack's ``loss=``); empty when it takes none.
        defaults: Keyword arguments the family's runner passes unless the caller overrides them.
        iterative: Whether it takes ``steps`` (an iterative attack).
        gradients: Whether it needs the model's input gradients (False: a black box suffices).
        ensemble: Whether it may be a member of the worst-case ensemble.
        aliases: Deprecated spellings that still resolve to ``name`` for one release.
        facts: A family's own facts (a corruption's ``kind`` and severity table), read as
            attributes too: ``entry.kind``.
    """

    name: str
    display: str
    target: Callable | str
    description: str = ""
    losses: tuple[str, ...] = ()
    defaults: Mapping = field(default_factory=dict)
    iterative: bool = True
    gradients: bool = True
    ensemble: bool = False
    aliases: tuple[str, ...] = ()
    facts: Mapping = field(default_factory=dict)

    def __getattr__(self, name: str):
        facts = self.__dict__.get("facts", {})
        if name in facts:
            return facts[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def load(self) -> Callable:
        """The implementing callable (imported now when given as ``"module:function"``)."""
        if callable(self.target):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


_ENTRY_FIELDS = frozenset(Entry.__dataclass_fields__) - {"name", "display", "target", "facts"}


class Registry:
    """Name -> :class:`Entry` for one family, in registration order.

    Args:
        family: What the members are (``"attack"``), for messages.
    """

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, display: str, target=None, **facts):
        """Registers ``name``; used as a call (``target=``) or as a decorator (no ``target``).

        Args:
            name: The new member's name (lower case, words joined by ``-``).
            display: Its printed name.
            target: The implementing callable or ``"module:function"``; omit it to decorate.
            **facts: The other fields of :class:`Entry`; any other keyword is one of the
                family's own facts (:attr:`Entry.facts`).

        Returns:
            The :class:`Entry` (a call), or the decorated function unchanged (a decorator).

        Raises:
            InputError: the name or one of its aliases is taken.
        """

        def add(fn):
            taken = [n for n in (name, *facts.get("aliases", ())) if n in self]
            if taken:
                raise InputError(f"{self.family} {taken[0]!r} is already registered")
            known = {k: v for k, v in facts.items() if k in _ENTRY_FIELDS}
            own = {k: v for k, v in facts.items() if k not in _ENTRY_FIELDS}
            entry = Entry(name=name, display=display, target=fn, **known, facts=own)
            self._entries[name] = entry
            for alias in entry.aliases:
                self._aliases[alias] = name
            return entry

        if target is not None:
            return add(target)

        def decorate(fn):
            add(fn)
            return fn

        return decorate

    def unregister(self, name: str) -> None:
        """Removes ``name`` and its aliases (for tests and plug-ins that replace a member)."""
        entry = self._entries.pop(name)
        for alias in entry.aliases:
            self._aliases.pop(alias, None)

    def canonical(self, name: str, *, warn: bool = True) -> str:
        """``name``, or the current name of a deprecated alias (with a DeprecationWarning).

        Raises:
            InputError: unknown name, listing the known ones.
        """
        if name in self._entries:
            return name
        if name in self._aliases:
            current = self._aliases[name]
            if warn:
                warnings.warn(
                    f"{self.family} {name!r} is deprecated; use {current!r}",
                    DeprecationWarning,
                    stacklevel=3,
                )
            return current
        raise InputError(
            f"{self.family} must be one of {', '.join(self._entries)}. Received: {name!r}"
        )

    def get(self, name: str) -> Entry:
        """The entry of ``name`` (or of a deprecated alias).

        Raises:
            InputError: unknown name.
        """
        return self._entries[self.canonical(name)]

    def names(self, **facts) -> tuple[str, ...]:
        """The registered names, in order, whose entries have every given fact
        (``names(ensemble=True)``)."""
        return tuple(
            e.name
            for e in self._entries.values()
            if all(getattr(e, k, None) == v for k, v in facts.items())
        )

    def display(self, name: str) -> str:
        """The printed name of ``name`` (an unknown name prints as itself)."""
        entry = self._entries.get(self._aliases.get(name, name))
        return entry.display if entry is not None else name

    @property
    def aliases(self) -> Mapping[str, str]:
        """Deprecated spelling -> current name."""
        return MappingProxyType(self._aliases)

    def __contains__(self, name) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self._entries)})"
