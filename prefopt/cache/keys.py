"""Stage keys: a short, stable hash of configs (dataclasses, mappings, sequences), with secrets redacted wherever
configs are hashed or written."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

REDACTED = "***"
_SECRET = re.compile(
    r"^(?:token|(?:.*[_-])?(?:api[_-]?key|apikey|secret|password|passwd|credentials?|private[_-]?key|"
    r"(?:access|auth|hf|hub|api|bearer|wandb|refresh)[_-]?token))$",
    re.IGNORECASE,
)


def is_secret_key(key: Any) -> bool:
    """Whether a config key names a secret (``api_key``, ``hf_token``, ``password``; not ``max_new_tokens``)."""
    return isinstance(key, str) and bool(_SECRET.match(key))


def jsonable(obj: Any) -> Any:
    """Plain JSON data of dataclasses, mappings, sequences and paths, with secrets replaced by ``***``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: REDACTED if is_secret_key(f.name) and getattr(obj, f.name) else jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, dict):
        return {str(k): REDACTED if is_secret_key(k) and v else jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def content_hash(*parts: Any, length: int = 12) -> str:
    """A short, stable hash of dataclasses, dicts, lists and scalars (key order does not matter)."""
    payload = json.dumps([jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]
