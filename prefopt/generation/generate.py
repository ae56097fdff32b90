"""The generate stage: every generator of the pool answers every prompt ``n`` times.

Work is cut into units of (generator, chunk of ``shard_size`` prompts). Each unit is written atomically to
``shards/<generator>/<chunk>.parquet`` inside the stage directory, so a run that is killed keeps every
finished unit and a rerun does only the missing ones. ``--shard i --num-shards k`` gives worker ``i`` every
``k``-th unit (one process per GPU, or one Slurm array task per machine); whichever run finds every unit
done merges them, in a fixed order, into ``data/`` (``prefopt.schemas.CANDIDATES``).

Generators run one after another, one engine at a time, its memory released before the next loads.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, load_dataset, load_from_disk
from tqdm.auto import tqdm

from prefopt.cache import atomic_write
from prefopt.generation.config import GenerationConfig, GeneratorConfig, PromptSource
from prefopt.generation.engines import GenerationEngine, SamplingParams, make_engine
from prefopt.schemas import DATA_DIR, DataError, arrow_dataset
from prefopt.world.config import WorldConfig
from prefopt.world.tasks import sample_problems

logger = logging.getLogger(__name__)

SHARDS_DIR = "shards"
CANDIDATE_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
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


def load_prompts(source: PromptSource, world: WorldConfig) -> list[dict]:
    """Prompts as rows ``{"prompt_id", "prompt", "reference"}``."""
    if source.source == "tiny_world":
        difficulty = world.in_domain if source.split == "in_domain" else world.out_of_domain
        rows = sample_problems(source.num_prompts, difficulty, seed=source.seed)
        return [
            {"prompt_id": f"{source.split}-{i:06d}", "prompt": r["problem"], "reference": r["answer"]}
            for i, r in enumerate(rows)
        ]
    return _prompts_from_file(source)


def read_table(path: str | Path, where: str) -> Dataset:
    """A .jsonl, .json or .parquet file, or a saved dataset directory, as a Dataset; ``where`` names the recipe
    field in errors."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found ({where})")
    if path.is_dir():
        return load_from_disk(str(path))
    kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None:
        raise DataError(
            f"{path}: unsupported file type ({where}); expected .jsonl, .json, .parquet or a saved dataset directory"
        )
    try:
        return load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # datasets raises several kinds for a malformed file
        raise DataError(f"{path}: could not be read as {kind} ({where}): {err}") from None


def _prompts_from_file(source: PromptSource) -> list[dict]:
    path = Path(source.path)
    ds = read_table(path, "generation.prompts.path")
    for column in filter(None, [source.prompt_field, source.reference_field]):
        if column not in ds.column_names:
            raise DataError(f"{path}: missing column {column!r} (generation.prompts); it has {ds.column_names}")
    rows = []
    for i, row in enumerate(ds):
        prompt = row[source.prompt_field]
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path}: row {i}: column {source.prompt_field!r} must be non-empty text, got {prompt!r}")
        reference = row[source.reference_field] if source.reference_field else None
        rows.append(
            {
                "prompt_id": str(row.get("id", f"{path.stem}-{i:06d}")),
                "prompt": prompt,
                "reference": None if reference is None else str(reference),
            }
        )
    ids = [r["prompt_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: prompt ids (column 'id') are not unique")
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
        for i, (prompt, outs) in enumerate(zip(batch, engine.generate([p["prompt"] for p in batch], params))):
            for k, out in enumerate(outs):
                rows.append(
                    {
                        "candidate_id": f"{prompt['prompt_id']}/{gen.name}/{k}",
                        "prompt_id": prompt["prompt_id"],
                        "prompt": prompt["prompt"],
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
    merged = arrow_dataset(pa.concat_tables([pq.read_table(u.path(stage_dir)) for u in units]))
    atomic_write(stage_dir / DATA_DIR, lambda tmp: merged.save_to_disk(str(tmp)))


def run_generation(
    cfg: GenerationConfig,
    prompts: list[dict],
    model_path: Callable[[str], str],
    stage_dir: Path,
    shard: int = 0,
    num_shards: int = 1,
) -> bool:
    """Generate this worker's missing units into ``stage_dir``; merge if every unit is done.

    ``model_path`` resolves a generator's ``model`` reference (it is called only for generators with work
    left). Returns True when ``stage_dir/data`` holds the merged candidates.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"need 0 <= shard < num_shards, got shard {shard} of {num_shards}")
    units = work_units(cfg, len(prompts))
    mine = [u for i, u in enumerate(units) if i % num_shards == shard]
    todo = [u for u in mine if not u.path(stage_dir).exists()]
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
                table = pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA)
                atomic_write(unit.path(stage_dir), lambda tmp, table=table: pq.write_table(table, tmp))
        finally:
            engine.close()
    missing = [u for u in units if not u.path(stage_dir).exists()]
    if missing:
        logger.info("%d units are still missing (other shards); the run that finds all done merges them", len(missing))
        return False
    merge_units(units, stage_dir)
    return True
