"""The generate stage: every generator of the pool answers every prompt ``n`` times.

Generators run one after another, one engine at a time, its memory released before the next loads.
Output: the candidates dataset (``prefopt.schemas.CANDIDATES``).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk
from tqdm.auto import tqdm

from prefopt.configs import GenerationConfig, PromptSource, WorldConfig
from prefopt.generation.engines import SamplingParams, make_engine
from prefopt.schemas import DataError
from prefopt.world.tasks import sample_problems

logger = logging.getLogger(__name__)


def load_prompts(source: PromptSource, world: WorldConfig) -> list[dict]:
    """Prompts as rows ``{"prompt_id", "prompt", "reference"}``."""
    if source.source == "tiny_world":
        difficulty = world.in_domain if source.split == "in_domain" else world.out_of_domain
        rows = sample_problems(source.num_prompts, difficulty, seed=source.seed)
        return [{"prompt_id": f"{source.split}-{i:06d}", "prompt": r["problem"], "reference": r["answer"]}
                for i, r in enumerate(rows)]
    return _prompts_from_file(source)


def _prompts_from_file(source: PromptSource) -> list[dict]:
    path = Path(source.path)
    if not path.exists():
        raise DataError(f"{path}: prompt file not found (generation.prompts.path)")
    if path.is_dir():
        ds = load_from_disk(str(path))
    else:
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            raise DataError(f"{path}: unsupported prompt file type; expected .jsonl, .json, .parquet or a "
                            "saved dataset directory")
        ds = load_dataset(kind, data_files=str(path), split="train")
    for column in filter(None, [source.prompt_field, source.reference_field]):
        if column not in ds.column_names:
            raise DataError(f"{path}: missing column {column!r} (generation.prompts); it has {ds.column_names}")
    rows = []
    for i, row in enumerate(ds):
        prompt = row[source.prompt_field]
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path}: row {i}: column {source.prompt_field!r} must be non-empty text, "
                            f"got {prompt!r}")
        reference = row[source.reference_field] if source.reference_field else None
        rows.append({"prompt_id": str(row.get("id", f"{path.stem}-{i:06d}")), "prompt": prompt,
                     "reference": None if reference is None else str(reference)})
    return rows


def generator_seed(base_seed: int, name: str) -> int:
    """A per-generator seed that does not depend on the order of the pool."""
    return base_seed * 1_000_003 + zlib.crc32(name.encode())


def generate_candidates(cfg: GenerationConfig, prompts: list[dict], model_paths: dict[str, str]) -> Dataset:
    """Run every generator over ``prompts``; ``model_paths`` maps generator name to a model directory."""
    rows = []
    for gen in cfg.generators:
        logger.info("Generating %d x %d samples with generator %r (%s)", len(prompts), gen.n, gen.name,
                    model_paths[gen.name])
        engine = make_engine(cfg.engine, model_paths[gen.name])
        try:
            seed = generator_seed(gen.seed, gen.name)
            batches = range(0, len(prompts), cfg.batch_size)
            for b, start in enumerate(tqdm(batches, desc=f"generate {gen.name}", unit="batch")):
                batch = prompts[start:start + cfg.batch_size]
                params = SamplingParams(n=gen.n, temperature=gen.temperature, top_p=gen.top_p,
                                        max_new_tokens=gen.max_new_tokens, seed=seed + b)
                for prompt, outs in zip(batch, engine.generate([p["prompt"] for p in batch], params)):
                    for k, out in enumerate(outs):
                        rows.append({
                            "candidate_id": f"{prompt['prompt_id']}/{gen.name}/{k}",
                            "prompt_id": prompt["prompt_id"],
                            "prompt": prompt["prompt"],
                            "reference": prompt["reference"],
                            "generator": gen.name,
                            "model": model_paths[gen.name],
                            "sample_index": k,
                            "completion": out.text,
                            "finish_reason": out.finish_reason,
                            "sampling": {"temperature": gen.temperature, "top_p": gen.top_p,
                                         "max_new_tokens": gen.max_new_tokens, "seed": params.seed},
                        })
        finally:
            engine.close()
    return Dataset.from_list(rows)
