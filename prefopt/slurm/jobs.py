"""The jobs of one run (generate, judge, pairs, train, eval) and of a sweep (shared generate and judge jobs,
prepare, each run's own jobs, collect), rendered as scripts with their recipe files and submit.sh."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefopt.recipe import Recipe
from prefopt.slurm.bodies import GENERATE_MERGE_BODY, GENERATE_SHARD_BODY, TRAIN_BODY
from prefopt.slurm.resources import Request, accelerate_config_path, request
from prefopt.slurm.scripts import (
    UNSAFE_CHARS,
    Job,
    Rendered,
    job_name,
    job_script,
    recipe_text,
    sbatch_lines,
    submit_script,
)


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
        job = Job(var, stage, job_script(header, comment, assignments, body, self.workdir), req, after, array)
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
    slug = UNSAFE_CHARS.sub("_", recipe.name)[:120]
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
    rendered.files[recipe_file] = recipe_text({k: v for k, v in data.items() if k != "sweep"}, source)
    for job in r.jobs:
        rendered.files[r.directory / job.filename] = job.script
    title = f"{recipe.name}: " + " -> ".join(job.var for job in r.jobs)
    rendered.files[r.directory / "submit.sh"] = submit_script(rendered, title, r.workdir, r.log_dir, sbatch_args or [])
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
        rendered.files[recipe_file] = recipe_text(run.data, recipe_path)
    for job in r.jobs:
        rendered.files[r.directory / job.filename] = job.script
    title = f"Sweep {sweep.name}: {len(runs)} runs, {len(r.jobs)} jobs"
    rendered.files[r.directory / "submit.sh"] = submit_script(rendered, title, r.workdir, r.log_dir, sbatch_args or [])
    return rendered
