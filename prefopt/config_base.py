"""Building typed config dataclasses from YAML values: field help, safe names, strict conversion.

Every stage's config section (``prefopt/<stage>/config.py``) is a frozen dataclass whose fields carry
``metadata["help"]``; :func:`from_dict` builds one from a mapping, rejecting unknown keys, wrong types and bad
values with a :class:`ConfigError` naming the dotted field path
(``generation.generators[1].temperature: expected a number, got 'hot'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal

from prefopt.errors import ConfigError


def described(text: str, **kwargs) -> Any:
    """A dataclass field with help text (``metadata["help"]``), as TRL's configs declare theirs."""
    return field(metadata={"help": text}, **kwargs)


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # becomes a path segment or a shell word as it is


def check_name(value: str, what: str) -> None:
    """A name that becomes a directory or a shell word: letters, digits and ``_ . + -``, not starting with a dot."""
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(
            f"{what}: {value!r} is not a safe name (expected letters, digits and _ . + -, starting with "
            "a letter or digit, at most 100 characters): it becomes a directory name"
        )


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # an optional value: its own type's error says more than a list of types
            return _convert(value, options[0], where)
        for arg in options:
            try:
                return _convert(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {' or '.join(_describe(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where}: expected one of {[m.value for m in tp]}, got {value!r}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):  # YAML reads 5e-5 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(number)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and tp in (dict, list):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_describe(tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys, missing fields and wrong types."""
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((key for key in data if key not in fields), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown field{did_you_mean(unknown[0], fields)}; expected one of {sorted(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: missing required field ({f.metadata.get('help', '')})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        name, sep, rest = str(err).partition(": ")
        if not (sep and name in fields):  # "field must be ...": the message starts with the field's name
            first = re.match(r"(\w+) (?!and |or )", str(err))
            if first and first.group(1) in fields:
                name, sep, rest = first.group(1), " ", str(err)
        if sep and name in fields:  # "field: what is wrong" names the field itself
            raise ConfigError(f"{where}.{name}: {rest}" if where else f"{name}: {rest}") from None
        raise ConfigError(f"{where}: {err}" if where else str(err)) from None


def did_you_mean(name: Any, options: Any) -> str:
    """`` (did you mean 'x'?)`` for the option closest to a misspelt ``name``, or ''."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_trl_fields(trl: dict[str, Any], field_types: dict[str, Any], owner: str, where: str) -> dict[str, Any]:
    """Check the keys and types of a TRL config section (``field_types``: each field's type hint, see
    :mod:`prefopt.training.trl_fields`); values come back converted as the config will hold them."""
    out = {}
    for key, value in trl.items():
        if key not in field_types:
            close = difflib.get_close_matches(key, field_types, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.{key}: unknown field of {owner}{hint}")
        if key == "output_dir":
            raise ConfigError(f"{where}.output_dir: set by prefopt (the train stage's directory); remove it")
        converted = _convert(value, field_types[key], f"{where}.{key}")
        out[key] = converted.value if isinstance(converted, enum.Enum) else converted  # stays YAML-safe
    return out
