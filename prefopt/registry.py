"""Registries for prefopt's extension points: pair strategies, losses, judges, engines.

Each extension point keeps one :class:`Registry`. An entry is registered once, under its name, with the
capabilities callers ask about (``registry.get(name).needs_generator_labels``) instead of comparing names
across the code. Looking up an unknown name raises :class:`UnknownName` (a ``ValueError``) that lists the
valid names, so recipe validation can report it in one line.

A registry given a ``plugins`` package finds its entries there the first time it is asked for a name: adding an
extension is one new file, named nowhere else. By default it imports every module of the package, and each
registers what it defines. With ``declared="NAME"`` it imports none: each module declares its entry in a literal
mapping ``NAME = {"name": ..., "help": ..., <capabilities>}``, read from the source with :mod:`ast`, and its
target is the string ``"module:run"`` (the module's ``run``; a registry may name another ``entry``, a declaration
its own ``"entry"``), imported by :func:`load_target` when needed; so validating a name costs no import of what the
extension needs (pandas, torch). Modules of the package listed in ``shared`` are what the plugins share, not plugins.

This module is a leaf: it imports nothing of prefopt, and nothing heavy.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that no entry of a registry has; the message lists the valid ones."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered extension: its name, the object (a function or class), its capabilities and help."""

    name: str
    target: T
    help: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, item: str) -> Any:
        capabilities = self.__dict__.get("capabilities", {})
        if item in capabilities:
            return capabilities[item]
        raise AttributeError(f"{self.__dict__.get('name', '?')!r} has no capability {item!r}")


class Registry(Generic[T]):
    """Names of one kind of extension, each with its target and capabilities.

    ``defaults`` lists every capability the registry's entries have, with the value an entry gets when it does
    not set it; registering an unknown capability is an error, so a misspelt one cannot go unnoticed.
    """

    def __init__(
        self,
        kind: str,
        plugins: str | None = None,
        declared: str | None = None,
        entry: str = "run",
        shared: tuple[str, ...] = (),
        **defaults: Any,
    ):
        self.kind = kind
        self.plugins = plugins
        self.declared = declared
        self.entry = entry
        self.shared = shared
        self.defaults = defaults
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = plugins is None

    def _discover(self) -> None:
        """Find the ``plugins`` package's entries (once): import its modules, or read their declarations."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.plugins)
        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if module.name.startswith("_") or module.name in self.shared:
                continue
            name = f"{self.plugins}.{module.name}"
            if self.declared is None:
                importlib.import_module(name)
            else:
                source = Path(package.__path__[0], f"{module.name}.py").read_text()
                declaration = dict(_literal_assignment(source, self.declared, name))
                target = f"{name}:{declaration.pop('entry', self.entry)}"
                try:
                    self.register(declaration.pop("name"), target, help=declaration.pop("help", ""), **declaration)
                except (TypeError, ValueError) as err:  # an unknown capability, a name declared twice
                    raise type(err)(f"{name}: {err}") from None

    def register(self, name: str, target: T | None = None, *, help: str = "", **capabilities: Any):
        """Register ``target`` under ``name``; without ``target``, a decorator that registers what it decorates."""
        unknown = sorted(set(capabilities) - set(self.defaults))
        if unknown:
            raise TypeError(f"{self.kind} {name!r}: unknown capabilities {unknown}; known: {sorted(self.defaults)}")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, help, {**self.defaults, **capabilities})
            return obj

        return add if target is None else add(target)

    def get(self, name: str) -> Entry[T]:
        """The entry named ``name``; an unknown name raises :class:`UnknownName` listing the valid ones."""
        self._discover()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(self.unknown_message(name)) from None

    def unknown_message(self, name: Any) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; expected one of {self.names()}"

    def names(self, **where: Any) -> list[str]:
        """Registered names, optionally only those whose capabilities match ``where``: in order of registration, or
        sorted for a plugin registry (whose modules may be imported in any order)."""
        self._discover()
        names = [n for n, e in self._entries.items() if all(e.capabilities.get(k) == v for k, v in where.items())]
        return sorted(names) if self.plugins else names

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._discover()
        return iter(self._entries.values())

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)


def _literal_assignment(source: str, variable: str, module: str) -> dict[str, Any]:
    """The literal value assigned to ``variable`` at the top level of a module's source."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(value, dict) and "name" in value:
                return value
    raise TypeError(f"{module}: a plugin module declares itself as {variable} = {{'name': ..., ...}} (a literal)")


def load_target(entry: Entry) -> Any:
    """An entry's target, importing a ``"module:attribute"`` string target."""
    if not isinstance(entry.target, str) or ":" not in entry.target:
        return entry.target
    module, _, attribute = entry.target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def lookup(registry: Registry, name: str, where: str, error: Callable[[str], Exception]) -> Entry:
    """``registry.get(name)``, with an unknown name raised as ``error(f"{where}: ...")``."""
    try:
        return registry.get(name)
    except UnknownName as err:
        raise error(f"{where}: {err}") from None
