"""The generate stage: every generator of the pool answers every prompt ``n`` times.

Work is cut into units of (generator, chunk of ``shard_size`` prompts). Each unit is written atomically to
``shards/<generator>/<chunk>.parquet`` inside the stage directory, so a run that is killed keeps every
finished unit and a rerun does only the missing ones. A unit's file is trusted only if it reads whole (page
checksums) with its expected row count (prompts x ``n``); a torn or corrupted one is generated again, with one
warning line. ``--shard i --num-shards k`` gives worker ``i`` every
``k``-th unit (one process per GPU, or one Slurm array task per machine); whichever run finds every unit
done merges them, in a fixed order, into ``data/`` (``prefopt.schemas.CANDIDATES``).

Generators run one after another, one engine at a time, its memory released before the next loads.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from prefopt.cache import atomic_write, sound_shard, write_parquet
from prefopt.engines.base import GenerationEngine, SamplingParams
from prefopt.engines.registry import make_engine
from prefopt.generation.config import GenerationConfig, GeneratorConfig, PromptSource
from prefopt.schemas import DATA_DIR, DataError, arrow_dataset, prompt_problem
from prefopt.tasks.registry import task
from prefopt.user_data import load_user_dataset

logger = logging.getLogger(__name__)

SHARDS_DIR = "shards"
CANDIDATE_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("prompt_messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("reference", pa.string()),
        ("generator", pa.string()),
        ("model", pa.string()),
        ("sample_index", pa.int64()),
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        (
            "sampling",
            pa.struct(
                [
                    ("temperature", pa.float64()),
                    ("top_p", pa.float64()),
                    ("max_new_tokens", pa.int64()),
                    ("seed", pa.int64()),
                ]
            ),
        ),
        ("token_logprobs", pa.list_(pa.float64())),
        ("cumulative_logprob", pa.float64()),
    ]
)


def load_prompts(source: PromptSource, settings: Any = None) -> list[dict]:
    """Prompts of the task ``source.source`` names (:mod:`prefopt.tasks`), given its settings (its recipe section, e.g.
    the tiny world's ``world``), as rows ``{"prompt_id", "prompt", "prompt_messages", "reference"}``:
    ``prompt_messages`` is the conversation the generators answer (``source.system_prompt`` first where it has no
    system turn of its own), ``prompt`` the text of its last, user turn."""
    return task(source.source).prompts(source, settings)


def with_system_prompt(conversation: list[dict], system_prompt: str | None) -> list[dict]:
    """``conversation`` after a system turn of ``system_prompt``, unless it has a system turn of its own."""
    if system_prompt is None or conversation[0]["role"] == "system":
        return conversation
    return [{"role": "system", "content": system_prompt}, *conversation]


def prompts_from_file(source: PromptSource) -> list[dict]:
    """The user's prompts, checked row by row: a one-line error names the data, the row and the column."""
    spec = source.dataset_spec()
    name = spec.path
    fields = {"prompt_field": source.prompt_field, "reference_field": source.reference_field}
    ds = load_user_dataset(spec, tuple(c for c in fields.values() if c))
    for field, column in fields.items():
        if column and column not in ds.column_names:
            raise DataError(
                f"{name}: column {column}: missing (generation.prompts.{field}; the data has columns {ds.column_names})"
            )
    if not len(ds):
        raise DataError(f"{name}: no rows (split {spec.split!r}): no prompts to generate from")
    columns = [c for c in (source.prompt_field, source.reference_field, "id") if c and c in ds.column_names]
    mixed = getattr(datasets, "Json", ())  # datasets >= 5 reads a JSON column of mixed types as Json, lossily
    for column in columns:
        if isinstance(ds.features[column], mixed):
            expected = (
                "text in every row, or a list of messages in every row"
                if column == source.prompt_field
                else ("text or a number in every row")
            )
            raise DataError(
                f"{name}: column {column}: values of different types in different rows (expected {expected})"
            )
    values = ds.select_columns(list(dict.fromkeys(columns))).to_dict()
    stem = Path(name).stem or "prompt"
    rows, own_system, first_of = [], 0, {}
    for i in range(len(ds)):
        prompt = values[source.prompt_field][i]
        problem = prompt_problem(prompt)
        if problem:
            raise DataError(f"{name}: row {i}, column {source.prompt_field}: {problem}")
        if isinstance(prompt, str):
            conversation = [{"role": "user", "content": prompt}]
        else:
            conversation = [{"role": m["role"], "content": m["content"]} for m in prompt]
            own_system += conversation[0]["role"] == "system"
        reference = values[source.reference_field][i] if source.reference_field else None
        if isinstance(reference, bool) or not isinstance(reference, (str, int, float, type(None))):
            raise DataError(
                f"{name}: row {i}, column {source.reference_field}: type {type(reference).__name__} "
                "(expected text, a number or null)"
            )
        prompt_id = values["id"][i] if "id" in values else f"{stem}-{i:06d}"
        if prompt_id is None:
            raise DataError(f"{name}: row {i}, column id: null (expected a unique prompt id)")
        if isinstance(prompt_id, bool) or not isinstance(prompt_id, (str, int)):  # never str() of an object
            raise DataError(
                f"{name}: row {i}, column id: type {type(prompt_id).__name__} (expected text or an integer)"
            )
        prompt_id = str(prompt_id)
        if prompt_id in first_of:
            raise DataError(
                f"{name}: row {i}, column id: {prompt_id!r} is the id of row {first_of[prompt_id]} too (expected "
                "unique prompt ids)"
            )
        first_of[prompt_id] = i
        rows.append(
            {
                "prompt_id": prompt_id,
                "prompt": conversation[-1]["content"],
                "prompt_messages": with_system_prompt(conversation, source.system_prompt),
                "reference": None if reference is None else str(reference),
            }
        )
    if source.system_prompt is not None and own_system:
        logger.info(
            "%s: %d of %d prompts have a system turn of their own, kept in place of generation.prompts.system_prompt",
            name,
            own_system,
            len(rows),
        )
    return rows


def generator_seed(base_seed: int, name: str) -> int:
    """A per-generator seed that does not depend on the order of the pool."""
    return base_seed * 1_000_003 + zlib.crc32(name.encode())


@dataclass(frozen=True)
class WorkUnit:
    generator: GeneratorConfig
    chunk: int
    start: int  # index of the first prompt
    stop: int

    def path(self, stage_dir: Path) -> Path:
        return stage_dir / SHARDS_DIR / self.generator.name / f"{self.chunk:05d}.parquet"

    @property
    def rows(self) -> int:
        return (self.stop - self.start) * self.generator.n

    def done(self, stage_dir: Path) -> bool:
        """Whether the unit's file is there and sound; a damaged one is removed (one warning line)."""
        return sound_shard(self.path(stage_dir), self.rows, "generation unit")


def work_units(cfg: GenerationConfig, num_prompts: int) -> list[WorkUnit]:
    """All units in their fixed order: generators in pool order, chunks in prompt order."""
    return [
        WorkUnit(gen, c, start, min(start + cfg.shard_size, num_prompts))
        for gen in cfg.generators
        for c, start in enumerate(range(0, num_prompts, cfg.shard_size))
    ]


def generate_unit(
    engine: GenerationEngine, cfg: GenerationConfig, unit: WorkUnit, prompts: list[dict], model: str
) -> list[dict]:
    gen, rows = unit.generator, []
    seed = generator_seed(gen.seed, gen.name)
    for start in range(unit.start, unit.stop, cfg.batch_size):
        batch = prompts[start : min(start + cfg.batch_size, unit.stop)]
        # The seed follows the global prompt index, so samples do not depend on sharding.
        params = SamplingParams(
            n=gen.n,
            temperature=gen.temperature,
            top_p=gen.top_p,
            max_new_tokens=gen.max_new_tokens,
            seed=seed + start,
            stop=tuple(gen.stop),
            logprobs=gen.logprobs,
        )
        for i, (prompt, outs) in enumerate(zip(batch, engine.generate([p["prompt_messages"] for p in batch], params))):
            for k, out in enumerate(outs):
                rows.append(
                    {
                        "candidate_id": f"{prompt['prompt_id']}/{gen.name}/{k}",
                        "prompt_id": prompt["prompt_id"],
                        "prompt": prompt["prompt"],
                        "prompt_messages": prompt["prompt_messages"],
                        "reference": prompt["reference"],
                        "generator": gen.name,
                        "model": model,
                        "sample_index": k,
                        "completion": out.text,
                        "finish_reason": out.finish_reason,
                        "sampling": {
                            "temperature": gen.temperature,
                            "top_p": gen.top_p,
                            "max_new_tokens": gen.max_new_tokens,
                            "seed": params.seed + i,
                        },
                        "token_logprobs": None if out.token_logprobs is None else list(out.token_logprobs),
                        "cumulative_logprob": out.cumulative_logprob,
                    }
                )
    return rows


def merge_units(units: list[WorkUnit], stage_dir: Path) -> None:
    """Concatenate every unit, in the fixed unit order, into ``stage_dir/data`` (atomically)."""
    tables = [pq.read_table(u.path(stage_dir), page_checksum_verification=True) for u in units]
    merged = arrow_dataset(pa.concat_tables(tables))
    atomic_write(stage_dir / DATA_DIR, lambda tmp: merged.save_to_disk(str(tmp)))


def run_generation(
    cfg: GenerationConfig,
    prompts: list[dict],
    model_path: Callable[[str], str],
    stage_dir: Path,
    shard: int = 0,
    num_shards: int = 1,
    generators: Collection[str] | None = None,
) -> bool:
    """Generate this worker's missing units into ``stage_dir``; merge if every unit is done.

    ``model_path`` resolves a generator's ``model`` reference (it is called only for generators with work
    left). ``generators``: only their units, shared among the ``num_shards`` workers, and no merge (a phase of a
    data-parallel run, whose parent merges). Returns True when ``stage_dir/data`` holds the merged candidates.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"need 0 <= shard < num_shards, got shard {shard} of {num_shards}")
    units = work_units(cfg, len(prompts))
    chosen = units if generators is None else [u for u in units if u.generator.name in generators]
    mine = [u for i, u in enumerate(chosen) if i % num_shards == shard]
    todo = [u for u in mine if not u.done(stage_dir)]
    logger.info(
        "Generation: %d units in all, %d for shard %d/%d, %d already done",
        len(units),
        len(mine),
        shard,
        num_shards,
        len(mine) - len(todo),
    )
    for gen in cfg.generators:
        gen_units = [u for u in todo if u.generator.name == gen.name]
        if not gen_units:
            continue
        model = model_path(gen.model)
        logger.info(
            "Generator %r (%s, engine %s): %d prompts x %d samples",
            gen.name,
            model,
            cfg.engine,
            sum(u.stop - u.start for u in gen_units),
            gen.n,
        )
        engine = make_engine(cfg.engine, model, **{**cfg.engine_options, **gen.engine_options})
        try:
            for unit in tqdm(gen_units, desc=f"generate {gen.name}", unit="shard"):
                rows = generate_unit(engine, cfg, unit, prompts, model)
                write_parquet(pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA), unit.path(stage_dir))
        finally:
            engine.close()
    if generators is not None:
        return False
    # This worker's units were checked or written above; another worker's are checked before they are merged.
    checked = {(u.generator.name, u.chunk) for u in mine}
    missing = [
        u
        for u in units
        if not (u.path(stage_dir).exists() if (u.generator.name, u.chunk) in checked else u.done(stage_dir))
    ]
    if missing:
        logger.info("%d units are still missing (other shards); the run that finds all done merges them", len(missing))
        return False
    merge_units(units, stage_dir)
    return True
