"""Content-hash keys and atomic, crash-safe, verifiable output directories.

Every stage writes into a temporary sibling directory and renames it into place only when complete,
with a ``_prefopt_done.json`` manifest written last. A directory without the manifest is an interrupted
attempt and is never read as a result. The manifest records every file's size and SHA-256, and every data
shard's row count (a ``.parquet`` file, or an ``.arrow`` file of a saved dataset): a finished output whose files
are missing or of another size, or whose data shards have other content or another row count, is not complete
(:func:`is_complete`); :func:`verify_output` checks every file's checksum. Files are flushed to disk (``fsync``)
before they are renamed into place and before the manifest is written, so a power loss cannot leave a renamed
file empty behind a manifest.
Temporaries are named after the host and process that writes them; one left by a process that no longer runs
on this host (a kill) is removed by the next write of the same path.

Secrets never enter a key or a manifest: a mapping key that names a secret (``api_key``, ``hf_token``,
``password``, ...; see :func:`is_secret_key`) has its value replaced by ``***`` wherever configs are hashed or
written.

``keys.py`` (config hashes, secrets redacted), ``checks.py`` (the manifest and checks against it), ``atomic.py``
(atomic writes and finished outputs), ``fingerprints.py`` (file hashes, remembered).
"""

from prefopt.cache.atomic import (
    atomic_output_dir,
    atomic_write,
    fsync_tree,
    mark_complete,
    remove_stale_temporaries,
    temporary_path,
    write_parquet,
)
from prefopt.cache.checks import (
    MANIFEST,
    count_rows,
    file_records,
    is_complete,
    output_problems,
    read_manifest,
    report_damage,
    shard_problem,
    sound_shard,
    verify_output,
)
from prefopt.cache.fingerprints import cached_fingerprint, default_cache_dir, file_fingerprint
from prefopt.cache.keys import REDACTED, content_hash, is_secret_key

__all__ = [
    "MANIFEST",
    "REDACTED",
    "atomic_output_dir",
    "atomic_write",
    "cached_fingerprint",
    "content_hash",
    "count_rows",
    "default_cache_dir",
    "file_fingerprint",
    "file_records",
    "fsync_tree",
    "is_complete",
    "is_secret_key",
    "mark_complete",
    "output_problems",
    "read_manifest",
    "remove_stale_temporaries",
    "report_damage",
    "shard_problem",
    "sound_shard",
    "temporary_path",
    "verify_output",
    "write_parquet",
]
