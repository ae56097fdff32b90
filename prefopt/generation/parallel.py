"""Generation's data-parallel workers: which generators run together as ``data_parallel_size`` workers, on which
GPUs (:func:`parallel_layout`), and starting them (:func:`run_data_parallel`)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prefopt.errors import ConfigError
from prefopt.generation.config import GenerationConfig, GeneratorConfig
from prefopt.processes import ChildFailed

if TYPE_CHECKING:
    from prefopt.stage import StageContext

logger = logging.getLogger(__name__)


def replica_gpus(g: GenerationConfig, gen: GeneratorConfig) -> int:
    """GPUs one data-parallel replica of ``gen`` takes: its ``tensor_parallel_size`` x ``pipeline_parallel_size``
    (its engine_options merged over generation's); 0 for an engine that loads no weights (a server)."""
    from prefopt.engines.registry import ENGINES

    if not ENGINES.get(g.engine).runs_local_weights:
        return 0
    options = {**g.engine_options, **gen.engine_options}
    return int(options.get("tensor_parallel_size", 1)) * int(options.get("pipeline_parallel_size", 1))


@dataclass(frozen=True)
class ParallelPhase:
    """Generators run together as ``data_parallel_size`` workers, each on its own GPUs."""

    generators: tuple[str, ...]
    devices: tuple[str | None, ...]  # each worker's CUDA_VISIBLE_DEVICES; None: no GPU assigned


def parallel_layout(g: GenerationConfig, gpus: list[str]) -> list[ParallelPhase]:
    """The data-parallel phases of generation on ``gpus`` (the visible GPUs' ids): generators grouped by the GPUs
    a replica takes (:func:`replica_gpus`), in pool order, each group as ``data_parallel_size`` workers on
    disjoint slices of that many GPUs. Without GPUs, one phase of every generator. A group that does not fit is a
    one-line ConfigError."""
    workers = g.data_parallel_size
    if not gpus:
        return [ParallelPhase(tuple(gen.name for gen in g.generators), (None,) * workers)]
    groups: dict[int, list[str]] = {}
    for gen in g.generators:
        groups.setdefault(replica_gpus(g, gen), []).append(gen.name)
    phases = []
    for per_replica, names in groups.items():
        if workers * per_replica > len(gpus):
            raise ConfigError(
                f"generation.generators {names}: data_parallel_size {workers} x {per_replica} GPUs per replica "
                f"(tensor_parallel_size x pipeline_parallel_size) needs {workers * per_replica} GPUs; "
                f"{len(gpus)} are visible"
            )
        if per_replica == 0:
            devices: tuple[str | None, ...] = (None,) * workers
        else:
            devices = tuple(",".join(gpus[i * per_replica : (i + 1) * per_replica]) for i in range(workers))
        phases.append(ParallelPhase(tuple(names), devices))
    return phases


def _generate_worker(
    ctx: StageContext,
    output: Path,
    shard: int,
    num_shards: int,
    devices: str | None,
    generators: tuple[str, ...],
) -> None:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before anything initialises CUDA in this process
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s prefopt[{shard}] %(levelname)s %(message)s")
    from prefopt.generation.generate import load_prompts, run_generation

    g = ctx.recipe.generation
    prompts = load_prompts(g.prompts, ctx.settings(g.prompts.source))
    run_generation(g, prompts, ctx.model_path, output, shard, num_shards, generators)


def run_data_parallel(ctx: StageContext, output: Path) -> None:
    """``data_parallel_size`` generation workers at a time, in parallel, each with its own engine and GPUs: one
    phase per group of generators that take the same number of GPUs per replica (:func:`parallel_layout`). Every
    sample's seed follows its prompt and sample index, so the candidates equal a single process's."""
    g = ctx.recipe.generation
    workers = g.data_parallel_size
    import torch

    gpus: list[str] = []
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    phases = parallel_layout(g, gpus)  # every phase checked before any worker starts
    context = multiprocessing.get_context("spawn")
    for phase in phases:
        processes = [
            context.Process(
                target=_generate_worker,
                args=(ctx, output, i, workers, phase.devices[i], phase.generators),
            )
            for i in range(workers)
        ]
        on = f" on GPUs {list(phase.devices)}" if phase.devices[0] is not None else ""
        logger.info("Starting %d generation workers for %s%s", workers, list(phase.generators), on)
        try:
            for p in processes:
                p.start()
            for p in processes:
                p.join()
        except BaseException:  # interrupted or terminated: no worker outlives prefopt (finished shards are kept)
            for p in processes:
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
            raise
        failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
        if failed:
            raise ChildFailed(f"generation workers {failed} failed; rerun to resume (finished shards are kept)")
