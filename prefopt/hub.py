"""Hub ids resolved to the commit they name, so that a stage's key changes when the model or dataset behind a name
changes (a new push to ``main``), and stays the same while it does not.

The commit is asked of the Hub (``HfApi.repo_info``, 5 s at most) unless the Hub is switched off
(``HF_HUB_OFFLINE``); without an answer it is read from the local Hugging Face cache
(``<HF_HUB_CACHE>/<type>s--<org>--<name>/refs/<revision>``, what an offline load uses). A revision given as a
40-character commit is already resolved. With neither, the id enters the key as written.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

COMMIT = re.compile(r"[0-9a-f]{40}")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(ref: str) -> bool:
    """``org/name`` that is not a local path."""
    return bool(HUB_ID.fullmatch(ref)) and not Path(ref).expanduser().exists()


def cached_commit(repo_id: str, revision: str = "main", repo_type: str = "model") -> str | None:
    """The commit the local Hugging Face cache holds for ``revision`` of ``repo_id``, if any."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE, f"{repo_type}s--{repo_id.replace('/', '--')}", "refs", revision)
    commit = ref.read_text().strip() if ref.is_file() else ""
    return commit if COMMIT.fullmatch(commit) else None


@cache
def resolve_revision(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str | None:
    """The commit ``revision`` (default ``main``) of ``repo_id`` names now: from the Hub, else the local cache."""
    revision = revision or "main"
    if COMMIT.fullmatch(revision):
        return revision
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        try:
            from huggingface_hub import HfApi

            return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type, timeout=5).sha
        except Exception as err:  # unreachable, private, missing: the cache decides
            logger.debug("%s@%s: no answer from the Hub (%s)", repo_id, revision, err)
    return cached_commit(repo_id, revision, repo_type)
