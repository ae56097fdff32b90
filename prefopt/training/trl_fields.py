"""The fields of the TRL configs a recipe sets (``training.trl``, ``training.model_args``), without importing TRL.

Importing ``trl`` imports torch and transformers (about 8 s), so the recipe's names and types are checked
against a snapshot of the config dataclasses, ``trl_fields.json``, written from the installed TRL by
``python -m prefopt.training.trl_fields``; a test keeps it equal to the live classes. Where the installed TRL is
not the snapshot's version, the live classes are read instead (slower, never wrong). Building the configs
themselves, which runs TRL's own cross-field checks, happens before the first stage runs
(:func:`prefopt.recipe.check_trainer_configs`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from functools import cache
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from prefopt.errors import ConfigError

SNAPSHOT = Path(__file__).with_name("trl_fields.json")
CONFIGS = ("PrefDPOConfig", "PrefKTOConfig", "ModelConfig")


def _live_classes() -> dict[str, type]:
    from trl import ModelConfig

    from prefopt.training.dpo_trainer import PrefDPOConfig
    from prefopt.training.kto_trainer import PrefKTOConfig

    return {"PrefDPOConfig": PrefDPOConfig, "PrefKTOConfig": PrefKTOConfig, "ModelConfig": ModelConfig}


def describe(tp: Any) -> Any:
    """A JSON description of a type hint that :func:`rebuild` turns back into one ``from_dict`` checks the same way."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null", dict: "dict", list: "list"}
    if tp in simple:
        return simple[tp]
    if origin in (typing.Union, types.UnionType):
        return {"union": [describe(a) for a in args]}
    if origin is Literal:
        return {"literal": list(args)}
    if origin in (list, tuple):
        return {"list": describe(args[0]) if args else "any"}
    if origin is dict:
        return {"dict": describe(args[1]) if args else "any"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"literal": [m.value for m in tp]}
    return "any"  # Any, or a class a YAML value cannot be (from_dict passes such values through unchecked)


def rebuild(desc: Any) -> Any:
    """The type hint a description stands for."""
    if isinstance(desc, str):
        return {"bool": bool, "int": int, "float": float, "str": str, "null": type(None), "dict": dict}.get(
            desc, list if desc == "list" else Any
        )
    if "union" in desc:
        return typing.Union[tuple(rebuild(d) for d in desc["union"])]  # noqa: UP007 (built from a tuple)
    if "literal" in desc:
        return Literal[tuple(desc["literal"])]
    if "list" in desc:
        return list[rebuild(desc["list"])]
    return dict[str, rebuild(desc["dict"])]


def snapshot() -> dict[str, Any]:
    """Every init field of the configs, its type and its choices, from the installed TRL (imports it)."""
    configs = {}
    for name, cls in _live_classes().items():
        hints = typing.get_type_hints(cls)
        configs[name] = {
            f.name: {"type": describe(hints[f.name]), "choices": list(f.metadata.get("choices") or []) or None}
            for f in dataclasses.fields(cls)
            if f.init
        }
    return {"trl": version("trl"), "configs": configs}


@cache
def _fields() -> dict[str, dict[str, Any]]:
    data = json.loads(SNAPSHOT.read_text())
    if data["trl"] != version("trl"):  # another TRL: read its classes rather than trust an old snapshot
        data = snapshot()
    return data["configs"]


def field_types(config: str) -> dict[str, Any]:
    """Field name -> type hint of a config (one of :data:`CONFIGS`)."""
    return {name: rebuild(f["type"]) for name, f in _fields()[config].items()}


def field_choices(config: str) -> dict[str, list]:
    """Field name -> its allowed values, for the fields that declare them (``metadata["choices"]``)."""
    return {name: f["choices"] for name, f in _fields()[config].items() if f["choices"]}


# Fields a TRL user may look for in the model block that prefopt (or TRL 1.16) keeps elsewhere.
ELSEWHERE = {
    "model_name_or_path": "training.model",
    "trust_remote_code": "training.trl.trust_remote_code",
    "gradient_checkpointing": "training.trl.gradient_checkpointing",
    "chat_template": "training.chat_template",
}
LIST_FIELDS = ("lora_target_modules", "lora_target_parameters", "lora_modules_to_save")  # a bare name: a list of one


def check_trl_section(trl: dict[str, Any], config: str, where: str) -> dict[str, Any]:
    """A ``training.trl``-like section (``config``: PrefDPOConfig or PrefKTOConfig) with its names and types
    checked and values converted, and its trackers checked; TRL's own cross-field checks come later."""
    from prefopt.config_base import validate_trl_fields
    from prefopt.trackers import check_report_to

    base = "DPOConfig" if config == "PrefDPOConfig" else "KTOConfig"
    checked = validate_trl_fields(trl, field_types(config), f"{config} (trl.{base} + prefopt)", where)
    check_report_to(checked.get("report_to"), f"{where}.report_to")
    return checked


def check_model_args(model_args: dict[str, Any], where: str) -> dict[str, Any]:
    """``trl.ModelConfig`` fields (but model_name_or_path): names, types, choices, LoRA ranges, and what quantized
    loading needs besides a GPU (bitsandbytes, an adapter)."""
    from prefopt.config_base import validate_trl_fields

    types_ = {k: v for k, v in field_types("ModelConfig").items() if k != "model_name_or_path"}
    for key in model_args:
        if key in ELSEWHERE:
            raise ConfigError(f"{where}.{key}: not a model field here (set {ELSEWHERE[key]} instead)")
    checked = validate_trl_fields(
        {k: [v] if k in LIST_FIELDS and isinstance(v, str) else v for k, v in model_args.items()},
        types_,
        "trl.ModelConfig",
        where,
    )
    for key, choices in field_choices("ModelConfig").items():
        value = checked.get(key)
        if value is not None and value not in choices:
            raise ConfigError(f"{where}.{key}: expected one of {choices}, got {value!r}")
    if checked.get("lora_r", 1) < 1 or not 0 <= checked.get("lora_dropout", 0.0) < 1:
        raise ConfigError(
            f"{where}: expected lora_r >= 1 and 0 <= lora_dropout < 1, got lora_r "
            f"{checked.get('lora_r', 16)} and lora_dropout {checked.get('lora_dropout', 0.05)}"
        )
    quantized = [k for k in ("load_in_4bit", "load_in_8bit") if checked.get(k)]
    if quantized:
        if not checked.get("use_peft"):
            raise ConfigError(
                f"{where}.{quantized[0]}: a quantized policy trains only through an adapter (set use_peft: true)"
            )
        if find_spec("bitsandbytes") is None:
            raise ConfigError(f"{where}.{quantized[0]}: needs the bitsandbytes package (pip install bitsandbytes)")
    return checked


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"Written {SNAPSHOT} (trl {version('trl')})")
