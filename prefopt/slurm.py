"""Slurm scripts for a recipe: a job per stage, each asking for what its stage needs, chained with ``afterok``.

    prefopt run RECIPE.yaml --slurm              # write <output_dir>/slurm/<name>/: a script per stage, submit.sh
    prefopt run RECIPE.yaml --slurm --dry-run    # print them instead (and write nothing)
    prefopt sweep RECIPE.yaml --slurm [--dry-run]

One run is ``generate`` (an array of ``resources.generate.shards`` tasks; the shard count is written into the
script, so ``sbatch --array=3,7 generate.sh`` redoes two shards alone), ``generate_merge`` (after the array,
successful or not: it finishes any unit a task left and merges), ``judge``, ``pairs``, ``train`` (``accelerate
launch`` on every node of the allocation, the first node of ``SLURM_JOB_NODELIST`` the main one, ``SLURM_NODEID``
the machine rank) and ``eval``. GPUs per job come from the recipe (``tensor_parallel_size`` x
``data_parallel_size`` for vLLM generation, the accelerate config's ``num_processes`` for training) unless its
``resources:`` section sets them; time, memory, partition, CPUs and extra sbatch options come from that section.

Every job runs a recipe file written beside the scripts: the recipe with its ``--set`` overrides applied (and,
for a sweep run, its swept values), so that ``accelerate launch -m prefopt.training.dpo --config RECIPE`` trains
exactly that run's train stage. A sweep shares its generate and judge jobs between the runs that share those
stages, then a ``prepare`` job evaluates the generators and the untrained policy once, then each run has its own
pairs, train and eval jobs, and ``collect`` writes the table after all of them.

``scripts/generate_slurm.sh`` and ``scripts/train_slurm.sh`` are generated from the same bodies
(:func:`generic_scripts`; ``python -m prefopt.slurm`` rewrites them), for launching by hand.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prefopt.errors import ConfigError
from prefopt.generation.registry import ENGINES
from prefopt.recipe import Recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD = "world:"

# The bodies shared by the rendered scripts and the generic ones in scripts/: each reads shell variables set above it.
GENERATE_SHARD_BODY = """\
SHARD=${SLURM_ARRAY_TASK_ID:?submit as an array: sbatch --array=0-$((NUM_SHARDS - 1))}
if [ "$SHARD" -ge "$NUM_SHARDS" ]; then
  echo "array index $SHARD: this generation has shards 0 to $((NUM_SHARDS - 1))" >&2
  exit 2
fi
prefopt generate "$RECIPE" --shard "$SHARD" --num-shards "$NUM_SHARDS" "$@"
"""

GENERATE_MERGE_BODY = """\
# Every shard in turn: each redoes only the units its task left unfinished (none: it loads no model); the call
# that finds every unit done merges them, in a fixed order, and marks the stage complete.
for ((SHARD = 0; SHARD < NUM_SHARDS; SHARD++)); do
  prefopt generate "$RECIPE" --shard "$SHARD" --num-shards "$NUM_SHARDS" "$@"
done
"""

TRAIN_BODY = """\
case "$METHOD" in dpo|kto) ;; *) echo "METHOD must be dpo or kto, got '$METHOD'" >&2; exit 2 ;; esac
# GPUs of this node's allocation (not of the whole node): Slurm's count, else what is visible.
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-$(nvidia-smi --list-gpus | wc -l)}}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # sed reads all: no SIGPIPE under pipefail
MASTER_PORT=${MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}  # two jobs on one node: two ports
NUM_PROCESSES=$((SLURM_NNODES * GPUS_PER_NODE))
# One launcher per node; every value travels as its own argument ("$@"), never spliced into a command string.
srun --kill-on-bad-exit=1 bash -c 'exec accelerate launch --config_file "$1" --num_machines "$2" \\
  --num_processes "$3" --machine_rank "$SLURM_NODEID" --main_process_ip "$4" --main_process_port "$5" \\
  --rdzv_backend c10d -m "prefopt.training.$6" --config "$7" "${@:8}"' \\
  train "$ACCELERATE_CONFIG" "$SLURM_NNODES" "$NUM_PROCESSES" "$MASTER_ADDR" "$MASTER_PORT" "$METHOD" \\
  "$CONFIG" "$@"
"""


@dataclass(frozen=True)
class Request:
    """What one job asks Slurm for."""

    gpus: int  # per task (per node for training)
    nodes: int = 1
    shards: int = 1
    time: str | None = None
    mem: str | None = None
    partition: str | None = None
    cpus_per_task: int | None = None
    sbatch_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One sbatch script and the jobs it waits for."""

    var: str  # its shell variable in submit.sh, and its file's stem
    stage: str
    script: str
    request: Request
    after: tuple[tuple[str, str], ...] = ()  # (afterok | afterany, var)
    array: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.var}.sh"


@dataclass
class Rendered:
    """Every file of a Slurm rendering, by path, and the jobs in submission order."""

    directory: Path
    jobs: list[Job]
    files: dict[Path, str] = field(default_factory=dict)

    def write(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if path.suffix == ".sh":
                path.chmod(0o755)
        return self.directory / "submit.sh"

    def text(self) -> str:
        """Every script, each under a ``# ==> path <==`` line, and the recipe files it would write (the dry run's
        output)."""
        recipes = [str(path) for path in self.files if path.suffix == ".yaml"]
        scripts = [f"# ==> {path} <==\n{text}" for path, text in self.files.items() if path.suffix == ".sh"]
        return "\n".join(scripts) + f"\n# and the recipe files the jobs run: {', '.join(recipes)}\n"


# -- what each stage needs -------------------------------------------------------------------------------------
def _parallel(options: dict[str, Any]) -> int:
    return int(options.get("tensor_parallel_size", 1)) * int(options.get("pipeline_parallel_size", 1))


def _local(engine: str, models: list[str]) -> bool:
    """Whether an engine loads these models on this job's GPUs (not a server, not the tiny world on a CPU)."""
    return ENGINES.get(engine).runs_local_weights and not all(m.startswith(WORLD) for m in models)


GPUS_PER_NODE = 8  # a training node's GPUs when neither the recipe nor its accelerate config gives a count


def accelerate_processes(path: str) -> int:
    """GPUs a training job needs per node under an accelerate config: 0 for a CPU one, its ``num_processes`` per
    machine where it gives one, else a whole node (:data:`GPUS_PER_NODE`; the launch passes the count)."""
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            config = yaml.safe_load(candidate.read_text()) or {}
            if config.get("use_cpu"):
                return 0
            if "num_processes" not in config:
                return GPUS_PER_NODE
            return max(1, int(config["num_processes"]) // max(1, int(config.get("num_machines", 1))))
    raise ConfigError(f"{path}: accelerate config not found (looked in . and {REPO_ROOT})")


def accelerate_config_path(path: str) -> str:
    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            return str(candidate.resolve())
    raise ConfigError(f"training.accelerate_config: {path} not found (looked in . and {REPO_ROOT})")


def derived_gpus(recipe: Recipe, stage: str, shards: int = 1) -> int:
    """The GPUs a stage's job needs by the recipe (per array task for sharded generation, per node for training)."""
    if stage == "generate":
        g = recipe.generation
        if not g.generators or not _local(g.engine, [gen.model for gen in g.generators]):
            return 0
        tp = max(_parallel({**g.engine_options, **gen.engine_options}) for gen in g.generators)
        return tp * (g.data_parallel_size if shards == 1 else 1)  # a sharded task starts no workers of its own
    if stage == "judge":
        j = recipe.judging
        if not j.entry.is_model or all(ref.startswith(WORLD) for ref in j.model_refs):
            return 0
        if j.llm is not None and j.judge == "llm":
            return _parallel(j.llm.engine_options) if _local(j.llm.engine, j.model_refs) else 0
        return 1  # a reward model
    if stage == "pairs":
        mb = recipe.pairing.margin_bayes
        if mb is None or mb.proxy.model.startswith(WORLD):
            return 0
        return accelerate_processes(mb.proxy.accelerate_config)  # the proxy's DPO run
    if stage == "train":
        return 0 if recipe.training.model.startswith(WORLD) else accelerate_processes(recipe.training.accelerate_config)
    if stage == "eval":
        models = [g.model for g in recipe.generation.generators] + [recipe.training.model]
        return _parallel(recipe.evaluation.engine_options) if _local(recipe.evaluation.engine, models) else 0
    raise ValueError(f"unknown stage {stage!r}")


def request(recipe: Recipe, stage: str) -> Request:
    values = recipe.resources.stage(stage)
    gpus = values["gpus"] if values["gpus"] is not None else derived_gpus(recipe, stage, values["shards"])
    return Request(
        gpus=gpus,
        nodes=values["nodes"],
        shards=values["shards"],
        time=values["time"],
        mem=values["mem"],
        partition=values["partition"],
        cpus_per_task=values["cpus_per_task"],
        sbatch_args=tuple(values["sbatch_args"]),
    )


def resources_table(recipe: Recipe, stages: tuple[str, ...] = ("generate", "judge", "pairs", "train", "eval")) -> str:
    """What each stage's jobs would take (the dry run's resources table)."""
    lines = [
        "| stage | jobs | nodes | GPUs per node | GPUs in all | time | mem | partition | cpus/task |",
        "| --- " * 9 + "|",
    ]
    for stage in stages:
        r = request(recipe, stage)
        jobs = f"{r.shards} (array) + merge" if stage == "generate" and r.shards > 1 else "1"
        total = r.gpus * r.nodes * r.shards
        lines.append(
            f"| {stage} | {jobs} | {r.nodes} | {r.gpus} | {total} | {r.time or '-'} | {r.mem or '-'} | "
            f"{r.partition or '-'} | {r.cpus_per_task or '-'} |"
        )
    return "\n".join(lines) + "\n"


# -- scripts ---------------------------------------------------------------------------------------------------
_JOB_NAME = re.compile(r"[^\w.+-]+")


def job_name(name: str, stage: str) -> str:
    """A job name Slurm and the #SBATCH line take as one plain word."""
    return f"{_JOB_NAME.sub('_', name)[:80]}-{stage}"


def _plain(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.:,=+%/@-]+", value))


def sbatch_lines(
    name: str, req: Request, array: str | None = None, output: str | None = None, multi_node: bool = False
) -> list[str]:
    """The #SBATCH lines of a job (sbatch reads them without a shell: every value is one plain word, checked when
    the recipe loaded)."""
    lines = [f"#SBATCH --job-name={name}"]
    if array:
        lines.append(f"#SBATCH --array={array}")
    if multi_node or req.nodes > 1:
        lines += [f"#SBATCH --nodes={req.nodes}", "#SBATCH --ntasks-per-node=1"]
    if req.gpus:
        lines.append(f"#SBATCH --gres=gpu:{req.gpus}")
    for option, value in (
        ("cpus-per-task", req.cpus_per_task),
        ("time", req.time),
        ("mem", req.mem),
        ("partition", req.partition),
    ):
        if value is not None:
            lines.append(f"#SBATCH --{option}={value}")
    if output and _plain(output):
        lines.append(f"#SBATCH --output={output}")
    lines += [f"#SBATCH {arg}" for arg in req.sbatch_args]
    return lines


def _script(header: list[str], comment: str, assignments: dict[str, str], body: str, workdir: Path) -> str:
    q = shlex.quote
    lines = ["#!/usr/bin/env bash", *header, *(f"# {line}" if line else "#" for line in comment.splitlines())]
    lines += ["set -euo pipefail", f"cd {q(str(workdir))}"]
    lines += [f"{name}={value}" for name, value in assignments.items()]
    return "\n".join(lines) + "\n" + body


@dataclass
class _Renderer:
    workdir: Path
    directory: Path
    log_dir: Path
    title: str  # the jobs' names start with it
    jobs: list[Job] = field(default_factory=list)

    def log(self, array: bool) -> str:
        return str(self.log_dir / ("%x-%A_%a.out" if array else "%x-%j.out"))

    def add(
        self,
        var: str,
        stage: str,
        recipe: Recipe,
        comment: str,
        assignments: dict[str, str],
        body: str,
        after: tuple[tuple[str, str], ...] = (),
        array: str | None = None,
        req: Request | None = None,
    ) -> Job:
        req = req or request(recipe, stage)
        header = sbatch_lines(job_name(self.title, var), req, array, self.log(array is not None), stage == "train")
        job = Job(var, stage, _script(header, comment, assignments, body, self.workdir), req, after, array)
        self.jobs.append(job)
        return job

    def run_jobs(self, recipe: Recipe, recipe_file: Path, prefix: str = "", share: dict | None = None) -> dict:
        """generate (+ merge), judge, pairs and train of one recipe; ``share`` maps the sections a generate or
        judge stage's key hashes to the job already rendered for it (a sweep's runs share those)."""
        q = shlex.quote
        share = share if share is not None else {}
        recipe_word = q(str(recipe_file))
        own = {"RECIPE": recipe_word}
        done: dict[str, str] = {}
        if recipe.training.dataset is None:
            # The sections a stage's key hashes (read from the recipe alone: no data file needs to exist yet).
            gkey = ("generate", repr((recipe.world, recipe.generation)))
            if gkey not in share:
                req = request(recipe, "generate")
                if req.shards > 1:
                    shards = {**own, "NUM_SHARDS": str(req.shards)}
                    var = f"{prefix}generate"
                    self.add(
                        var,
                        "generate",
                        recipe,
                        f"Generation, shard $SLURM_ARRAY_TASK_ID of {req.shards} (resources.generate.shards; the\n"
                        "array index only picks the shard): resubmit any of them alone, e.g.\n"
                        f"sbatch --array=3,7 {self.directory / (var + '.sh')}",
                        shards,
                        GENERATE_SHARD_BODY,
                        array=f"0-{req.shards - 1}",
                    )
                    merge = self.add(
                        f"{prefix}generate_merge",
                        "generate",
                        recipe,
                        "After the generation array, whatever became of its tasks: finish their units, then merge.",
                        shards,
                        GENERATE_MERGE_BODY,
                        after=(("afterany", var),),
                    )
                    share[gkey] = merge.var
                else:
                    share[gkey] = self.add(
                        f"{prefix}generate", "generate", recipe, "Generation.", own, 'prefopt generate "$RECIPE"\n'
                    ).var
            done["generate"] = share[gkey]
            jkey = ("judge", repr((recipe.world, recipe.generation, recipe.judging)))
            if jkey not in share:
                share[jkey] = self.add(
                    f"{prefix}judge",
                    "judge",
                    recipe,
                    "Judging the candidates.",
                    own,
                    'prefopt judge "$RECIPE"\n',
                    after=(("afterok", done["generate"]),),
                ).var
            done["judge"] = share[jkey]
        if recipe.training.dataset is None:
            done["pairs"] = self.add(
                f"{prefix}pairs",
                "pairs",
                recipe,
                "Building the pairs" + (" (and margin_bayes's proxy)." if recipe.pairing.margin_bayes else "."),
                own,
                'prefopt pairs "$RECIPE"\n',
                after=(("afterok", done["judge"]),),
            ).var
        req = request(recipe, "train")
        done["train"] = self.add(
            f"{prefix}train",
            "train",
            recipe,
            f"Training ({recipe.training.method.upper()}) on {req.nodes} node(s) x {max(req.gpus, 1)} process(es):\n"
            "the recipe as --config trains its train stage, resuming from its last checkpoint, and marks it complete.",
            {
                "ACCELERATE_CONFIG": q(accelerate_config_path(recipe.training.accelerate_config)),
                "CONFIG": recipe_word,
                "METHOD": recipe.training.method,
                "GPUS_PER_NODE": f"${{GPUS_PER_NODE:-{max(req.gpus, 1)}}}",
            },
            TRAIN_BODY,
            after=(("afterok", done["pairs"]),) if "pairs" in done else (),
            req=req,
        ).var
        return done


def _recipe_text(data: dict, source: str | Path) -> str:
    return (
        f"# Written by prefopt from {source} (overrides and swept values applied); the Slurm jobs run this file.\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    )


def _submit_script(rendered: Rendered, title: str, workdir: Path, log_dir: Path, sbatch_args: list[str]) -> str:
    q = shlex.quote
    extra = "".join(f" {q(a)}" for a in sbatch_args)
    lines = [
        "#!/usr/bin/env bash",
        f"# {title}",
        "# Submit with: bash " + q(str(rendered.directory / "submit.sh")),
        "# Each job waits for the ones it reads (afterok; the merge after the generation array: afterany). A job",
        "# that fails leaves its dependants pending: fix it, then run this again (finished stages are skipped).",
        "set -euo pipefail",
        f"cd {q(str(workdir))}",
        f"mkdir -p {q(str(log_dir))}",
        'submit() { local id; id=$(sbatch --parsable "$@"); echo "${id%%;*}"; }',
    ]
    for job in rendered.jobs:
        deps = {}
        for kind, var in job.after:
            deps.setdefault(kind, []).append(f"${{{var}}}")
        dependency = ",".join(f"{kind}:{':'.join(vars_)}" for kind, vars_ in deps.items())
        log = q(str(log_dir / ("%x-%A_%a.out" if job.array else "%x-%j.out")))
        dep = f' --dependency="{dependency}"' if dependency else ""
        lines.append(f"{job.var}=$(submit{dep} --output={log}{extra} {q(str(rendered.directory / job.filename))})")
    first, last = rendered.jobs[0].var, rendered.jobs[-1].var
    lines.append(f'echo "submitted {len(rendered.jobs)} jobs: {first} ${{{first}}} ... {last} ${{{last}}}"')
    return "\n".join(lines) + "\n"


def _renderer(recipe: Recipe, directory: Path, workdir: Path | None, title: str) -> _Renderer:
    workdir = (workdir or Path.cwd()).resolve()
    log_dir = Path(recipe.resources.log_dir)
    return _Renderer(workdir, directory.resolve(), log_dir if log_dir.is_absolute() else workdir / log_dir, title)


def render_run(
    recipe: Recipe,
    data: dict,
    source: str | Path,
    sbatch_args: list[str] | None = None,
    workdir: Path | None = None,
) -> Rendered:
    """The scripts of one run: ``<output_dir>/slurm/<name>/``, its recipe file and submit.sh."""
    slug = _JOB_NAME.sub("_", recipe.name)[:120]
    directory = Path(recipe.output_dir) / "slurm" / (f"_{slug}" if slug.startswith(".") else slug)
    r = _renderer(recipe, directory, workdir, recipe.name)
    recipe_file = r.directory / "recipe.yaml"
    done = r.run_jobs(recipe, recipe_file)
    r.add(
        "eval",
        "eval",
        recipe,
        "Evaluating the generators, the policy before and after training; the results table.",
        {"RECIPE": shlex.quote(str(recipe_file))},
        'prefopt eval "$RECIPE"\n',
        after=(("afterok", done["train"]),),
    )
    rendered = Rendered(r.directory, r.jobs)
    rendered.files[recipe_file] = _recipe_text({k: v for k, v in data.items() if k != "sweep"}, source)
    for job in r.jobs:
        rendered.files[r.directory / job.filename] = job.script
    title = f"{recipe.name}: " + " -> ".join(job.var for job in r.jobs)
    rendered.files[r.directory / "submit.sh"] = _submit_script(rendered, title, r.workdir, r.log_dir, sbatch_args or [])
    return rendered


def render_sweep(
    recipe_path: str | Path,
    sweep: Any,
    runs: list[Any],
    directory: Path,
    extra: list[str] | None = None,
    sbatch_args: list[str] | None = None,
    workdir: Path | None = None,
) -> Rendered:
    """A sweep's scripts in ``directory``: the shared generate and judge jobs (once per distinct stage), a prepare
    job (the generators' and the untrained policy's evaluations), per run its pairs, train and eval jobs (each on
    the run's own recipe file), and collect after every run."""
    q = shlex.quote
    first = runs[0].recipe
    r = _renderer(first, directory, workdir, sweep.name)
    base = ["prefopt", "sweep", str(Path(recipe_path).resolve())]
    flags = list(extra or [])
    share: dict = {}
    per_run = []
    for run in runs:
        recipe_file = r.directory / "recipes" / f"{run.index:03d}.yaml"
        per_run.append((run, recipe_file, r.run_jobs(run.recipe, recipe_file, prefix=f"run{run.index}_", share=share)))
    judges = sorted({var for (kind, _), var in share.items() if kind == "judge"})
    sweep_word = " ".join(q(w) for w in [*base[2:], *flags])
    prepare = r.add(
        "prepare",
        "eval",
        first,
        "The stages every run reads: generation and judging (done by the jobs before), the generators' and the\n"
        "untrained policy's evaluations, once for the sweep.",
        {},
        f"prefopt sweep {sweep_word} --prepare\n",
        after=tuple(("afterok", var) for var in judges),
    )
    evals = []
    for run, _, done in per_run:
        evals.append(
            r.add(
                f"run{run.index}_eval",
                "eval",
                run.recipe,
                f"Run {run.index} ({run.label}): its evaluation and report (the stages before are done).",
                {"RUN": str(run.index)},
                f'prefopt sweep {sweep_word} --run "$RUN"\n',
                after=(("afterok", done["train"]), ("afterok", prepare.var)),
            ).var
        )
    r.add(
        "collect",
        "collect",
        first,
        "The sweep's table and plot, after every run ended (a failed run is listed as not finished).",
        {},
        f"prefopt sweep {sweep_word} --collect\n",
        after=tuple(("afterany", var) for var in evals),
        req=Request(
            gpus=0,
            time=first.resources.time,
            partition=first.resources.partition,
            sbatch_args=tuple(first.resources.sbatch_args),
        ),
    )
    rendered = Rendered(r.directory, r.jobs)
    for run, recipe_file, _ in per_run:
        rendered.files[recipe_file] = _recipe_text(run.data, recipe_path)
    for job in r.jobs:
        rendered.files[r.directory / job.filename] = job.script
    title = f"Sweep {sweep.name}: {len(runs)} runs, {len(r.jobs)} jobs"
    rendered.files[r.directory / "submit.sh"] = _submit_script(rendered, title, r.workdir, r.log_dir, sbatch_args or [])
    return rendered


# -- the generic scripts in scripts/ -----------------------------------------------------------------------------
GENERIC_GENERATE = """\
#!/usr/bin/env bash
# Generation across many machines as a Slurm array, by hand (`prefopt run RECIPE --slurm` writes the same jobs for
# a recipe, with its resources). Generated by `python -m prefopt.slurm` from prefopt/slurm.py: edit it there.
#
#   sbatch --array=0-15 scripts/generate_slurm.sh RECIPE.yaml 16 [prefopt options]   # 16 shards
#   sbatch --array=3,7 scripts/generate_slurm.sh RECIPE.yaml 16                      # shards 3 and 7 again
#   sbatch --dependency=afterany:ARRAY_JOB_ID scripts/generate_slurm.sh RECIPE.yaml 16 # then: finish, merge
#
# The shard count is an argument, never the array's size, so any subset of the array can be resubmitted. Every
# task writes its units into the same stage directory (on a shared file system), atomically; submitted without
# --array, the script finishes every shard's missing units and merges them in a fixed order.
# Logs go to logs/ under the submission directory: create it first (mkdir -p logs).
#SBATCH --job-name=prefopt-generate
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail
USAGE="usage: sbatch [--array=0-(K-1)] scripts/generate_slurm.sh RECIPE.yaml K [prefopt options]"
RECIPE=${1:?$USAGE}
NUM_SHARDS=${2:?$USAGE}
shift 2
case "$NUM_SHARDS" in ''|*[!0-9]*) echo "$USAGE (K: the shard count, got '$NUM_SHARDS')" >&2; exit 2 ;; esac
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
__SHARD__else
__MERGE__fi
"""

GENERIC_TRAIN = """\
#!/usr/bin/env bash
# Multi-node DPO or KTO training by hand (METHOD=dpo|kto): one accelerate launcher per node, all ranks rendezvousing
# on the first node (`prefopt run RECIPE --slurm` writes the same job for a recipe, with its resources). Generated
# by `python -m prefopt.slurm` from prefopt/slurm.py: edit it there.
#
#   sbatch --nodes=4 scripts/train_slurm.sh accelerate_configs/deepspeed_zero3.yaml CONFIG [--flag value ...]
#
# CONFIG is a recipe (its train stage is trained and marked complete), the file the train stage writes
# (runs/<name>/train/<hash>/train_config.yaml) or one written by hand (pairs_path, model_name_or_path, output_dir
# and PrefDPOConfig fields). Resubmitting the same job resumes from the last checkpoint in output_dir (set
# save_strategy: steps and save_steps). Logs go to logs/ under the submission directory: mkdir -p logs first.
#SBATCH --job-name=prefopt-train
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
USAGE="usage: [METHOD=dpo|kto] sbatch --nodes=N scripts/train_slurm.sh ACCELERATE_CONFIG CONFIG [overrides]"
ACCELERATE_CONFIG=${1:?$USAGE}
CONFIG=${2:?$USAGE}
shift 2
METHOD=${METHOD:-dpo}
"""


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def generic_scripts() -> dict[str, str]:
    """``scripts/generate_slurm.sh`` and ``scripts/train_slurm.sh`` as they must read."""
    generate = GENERIC_GENERATE.replace("__SHARD__", _indent(GENERATE_SHARD_BODY)).replace(
        "__MERGE__", _indent(GENERATE_MERGE_BODY)
    )
    return {"generate_slurm.sh": generate, "train_slurm.sh": GENERIC_TRAIN + TRAIN_BODY}


def write_generic_scripts(directory: Path = REPO_ROOT / "scripts") -> None:
    for name, text in generic_scripts().items():
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)


if __name__ == "__main__":
    write_generic_scripts(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "scripts")
