"""Generation's data-parallel layout: which generators run together as ``data_parallel_size`` workers, on which
GPUs (:func:`prefopt.pipeline.run_data_parallel` starts them)."""

from __future__ import annotations

from dataclasses import dataclass

from prefopt.errors import ConfigError
from prefopt.generation.config import GenerationConfig, GeneratorConfig


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
