"""Run a recipe's stages in order, each into ``<output_dir>/<stage>/<key>/``, skipping finished ones.

A stage's key is a content hash of its own config section, a per-stage format version, and the identity of
everything it reads: its input stage's key (or, for an ``--input`` given by hand or a ``training.dataset``, that
data's content fingerprint), the models it uses (tiny-world specs, or a local directory's content), and the files
its config names (prompt files, rubric files, benchmark files). So a rerun of an unchanged recipe on unchanged inputs
finds every output complete and does no work, any changed input reruns what depends on it, and two recipes that
share a prefix of stages share those outputs. Secrets never enter a key (:func:`prefopt.cache.is_secret_key`).

Stage code is imported when a stage runs, so keys and plans (``prefopt plan``) need no torch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import prefopt
from prefopt.cache import (
    MANIFEST,
    atomic_output_dir,
    cached_fingerprint,
    content_hash,
    default_cache_dir,
    file_fingerprint,
    is_complete,
    mark_complete,
    output_problems,
)
from prefopt.errors import ConfigError
from prefopt.generation.config import GenerationConfig, GeneratorConfig
from prefopt.hub import looks_like_hub_id, resolve_revision
from prefopt.layout import FINAL_MODEL_DIR, stage_dir
from prefopt.processes import ChildFailed
from prefopt.recipe import Recipe
from prefopt.user_data import DatasetSpec, source_key

logger = logging.getLogger(__name__)

WORLD_PREFIX = "world:"
# Bump a stage's number when what it writes changes for the same config: its cached outputs are then redone.
FORMAT_VERSIONS = {"generate": 2, "judge": 2, "pairs": 2, "proxy": 2, "train": 2, "eval": 2}
# 2: strict judge parsing and math-verify; exact fraction counts and seeded ties; bounded, step-normalised gap
# weights and one fp32 log-prob path. generate 2: candidates keep the conversation (prompt_messages).


@dataclass(frozen=True)
class StageOutcome:
    name: str
    path: Path
    status: str  # "ran" or "cached"


class Pipeline:
    """The stages of one recipe. Each method returns the stage's output directory."""

    def __init__(
        self, recipe: Recipe, cache_dir: str | Path | None = None, inputs: dict[str, str | Path] | None = None
    ):
        self.recipe = recipe
        self.root = Path(recipe.output_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.inputs = {stage: Path(path) for stage, path in (inputs or {}).items()}  # data given by hand, per stage
        self.outcomes: list[StageOutcome] = []
        self._model_paths: dict[str, str] = {}
        self._content: dict[object, str] = {}  # content fingerprints, computed once: inputs do not change mid-run

    def _once(self, key: object, compute: Callable[[], str]) -> str:
        """``compute()`` the first time ``key`` is asked for, then the remembered value (keys chain: every later
        stage's key recomputes the earlier ones, and hashing a large input each time is real I/O)."""
        if key not in self._content:
            self._content[key] = compute()
        return self._content[key]

    def fingerprint(self, path: str | Path) -> str:
        """:func:`file_fingerprint` of ``path``, once per pipeline."""
        return self._once(("file", str(Path(path).resolve())), lambda: file_fingerprint(path))

    # -- models ---------------------------------------------------------------------------------------------
    def model_key(self, ref: str) -> str:
        """A tiny-world model's spec, a local model's content (every file), a hub id with the commit it resolves to
        (:mod:`prefopt.hub`), or a served model's name as given."""
        if ref.startswith(WORLD_PREFIX):
            return self.recipe.world.models[ref[len(WORLD_PREFIX) :]].cache_key()
        if Path(ref).exists():
            return content_hash("local", cached_fingerprint(ref, self.cache_dir))
        if looks_like_hub_id(ref):
            return content_hash("id", ref, self._once(("hub", ref), lambda: resolve_revision(ref)))
        return content_hash("id", ref)  # the name a server serves

    def input_key(self, given: str | Path) -> str:
        """The identity of data given by hand (``--input``): its content, wherever it lies."""
        fingerprint = self.fingerprint(given)
        if not fingerprint:
            raise FileNotFoundError(f"{given}: no dataset here (the --input path is missing or empty)")
        return content_hash("input", fingerprint)

    def model_path(self, ref: str, build: bool = True) -> str:
        """A model directory for ``ref``, building a tiny-world model first if it is not cached (and ``build``)."""
        if not ref.startswith(WORLD_PREFIX):
            return ref
        if ref in self._model_paths:
            return self._model_paths[ref]
        name = ref[len(WORLD_PREFIX) :]
        spec = self.recipe.world.models[name]
        cached = is_complete(self.cache_dir / "models" / spec.cache_key())
        if not cached and not build:
            raise FileNotFoundError(f"{ref} is not built yet; `prefopt run` or `prefopt train` builds it")
        from prefopt.world.models import build_tiny_model

        path = build_tiny_model(spec, self.cache_dir, desc=f"world:{name}")
        self.outcomes.append(StageOutcome(f"model {name}", path, "cached" if cached else "ran"))
        self._model_paths[ref] = str(path)
        return str(path)

    # -- keys -----------------------------------------------------------------------------------------------
    def _key(self, stage: str, *parts) -> str:
        return content_hash(stage, prefopt.__version__, FORMAT_VERSIONS[stage], *parts)

    def generate_key(self) -> str:
        g = self.recipe.generation
        models = {gen.name: self.model_key(gen.model) for gen in g.generators}
        spec = g.prompts.dataset_spec() if g.prompts.source == "file" else None
        source = (
            (self.recipe.world.in_domain, self.recipe.world.out_of_domain)
            if spec is None
            else self._once(("dataset", repr(spec)), lambda: source_key(spec))
        )  # an edited prompt file is new input; a Hub dataset: its id, config, split and revision
        return self._key("generate", g, models, source)

    def _upstream(self, stage: str, default: Callable[[], str]) -> str:
        """The identity of what ``stage`` reads: data given by hand, else the previous stage's key."""
        return self.input_key(self.inputs[stage]) if stage in self.inputs else default()

    def judge_key(self) -> str:
        j = self.recipe.judging
        models = [self.model_key(ref) for ref in j.model_refs]
        rubric = self.fingerprint(j.llm.rubric) if j.llm is not None and Path(j.llm.rubric).is_file() else None
        return self._key("judge", j, self._upstream("judge", self.generate_key), models, rubric)

    def pairs_key(self) -> str:
        return self._key("pairs", self.recipe.pairing, self._upstream("pairs", self.judge_key))

    def proxy_key(self, upstream: str) -> str:
        """The proxy depends on the pairs it is trained on and scores, not on how margin_bayes then selects."""
        p = self.recipe.pairing
        base = dataclasses.replace(p, margin_bayes=None, reward_augmented=None)
        return self._key("proxy", base, p.margin_bayes.proxy, upstream, self.model_key(p.margin_bayes.proxy.model))

    def train_key(self) -> str:
        t = self.recipe.training
        default = (
            self.pairs_key
            if t.dataset is None
            else lambda: self._once(("dataset", repr(t.dataset)), lambda: source_key(t.dataset))
        )
        return self._key("train", t, self._upstream("train", default), self.model_key(t.model))

    def stage_dir(self, name: str, key: str) -> Path:
        return stage_dir(self.root, name, key)

    # -- running --------------------------------------------------------------------------------------------
    def _already_done(self, name: str, output: Path) -> bool:
        """True (and recorded as cached) when ``output`` is complete for this configuration."""
        if not is_complete(output):
            return False
        logger.info("[%s] skipped: %s is complete for this configuration", name, output)
        self.outcomes.append(StageOutcome(name, output, "cached"))
        return True

    def _run_stage(self, name: str, output: Path, work: Callable[[Path], None], manifest: dict) -> Path:
        if self._already_done(name, output):
            return output
        logger.info("[%s] writing %s", name, output)
        with atomic_output_dir(output, {"stage": name, **manifest}) as tmp:
            work(tmp)
        self.outcomes.append(StageOutcome(name, output, "ran"))
        return output

    def _run_in_place(self, name: str, output: Path, work: Callable[[Path], bool], manifest: dict) -> Path:
        """A stage that works directly in ``output``, keeping partial progress there for a rerun to resume from;
        it is marked complete when ``work`` returns True (False: other workers still have their part to do)."""
        if self._already_done(name, output):
            return output
        logger.info("[%s] writing %s", name, output)
        created = not output.exists()
        output.mkdir(parents=True, exist_ok=True)
        try:
            finished = work(output)
        except BaseException:
            if created and not any(output.iterdir()):  # failed before writing anything: leave no empty output
                output.rmdir()
            raise
        if finished:
            mark_complete(output, {"stage": name, **manifest})
            self.outcomes.append(StageOutcome(name, output, "ran"))
        return output

    def _input(self, stage: str, given: str | Path | None, upstream: str, default: Callable[[], Path]) -> Path:
        """What ``stage`` reads: ``given`` (recorded, so that this stage's key and the later ones follow it), an
        input set when the pipeline was made, or the finished output of the ``upstream`` stage."""
        if given:
            self.inputs[stage] = Path(given)
        if stage in self.inputs:
            return self.inputs[stage]
        path = default()
        if not is_complete(path):
            raise FileNotFoundError(
                f"{path}: the {upstream} stage has not run for this recipe; "
                f"run `prefopt {upstream}` first (or `prefopt run`)"
            )
        return path

    def generate(self, output: str | Path | None = None, shard: int = 0, num_shards: int = 1) -> Path:
        """Generate in place, unit by unit, so that a killed run resumes where it stopped.

        With ``num_shards > 1`` this process is one worker of many; with ``generation.data_parallel_size > 1``
        it starts that many workers itself. Either way, the run that finds every unit done merges them.
        """
        g = self.recipe.generation

        def work(out: Path) -> bool:
            from prefopt.generation.generate import load_prompts, run_generation

            if num_shards == 1 and g.data_parallel_size > 1:
                run_data_parallel(self.recipe, self.cache_dir, out)
            merged = run_generation(
                g, load_prompts(g.prompts, self.recipe.world), self.model_path, out, shard, num_shards
            )
            if not merged:
                self.outcomes.append(StageOutcome(f"generate shard {shard}/{num_shards}", out, "ran"))
            return merged

        out = Path(output) if output else self.stage_dir("generate", self.generate_key())
        return self._run_in_place("generate", out, work, {"config": g})

    def judge(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        """Judge in place, shard by shard, so that a killed run resumes where it stopped."""
        source = self._input("judge", input, "generate", lambda: self.stage_dir("generate", self.generate_key()))

        def work(out: Path) -> bool:
            from prefopt.judging.judge import run_judging
            from prefopt.schemas import CANDIDATES, load_stage_dataset

            candidates = load_stage_dataset(source, CANDIDATES, "candidates")
            run_judging(self.recipe.judging, candidates, out, self.model_path)
            return True

        out = Path(output) if output else self.stage_dir("judge", self.judge_key())
        return self._run_in_place("judge", out, work, {"config": self.recipe.judging, "input": source})

    def proxy(self, source: Path) -> Path:
        """margin_bayes's proxy stage, in place (resumable): seed pairs, the proxy's DPO run, implicit margins."""
        cfg = self.recipe.pairing

        def work(out: Path) -> bool:
            from prefopt.pairing.build import base_pairs
            from prefopt.pairing.proxy import run_proxy
            from prefopt.schemas import JUDGMENTS, load_stage_dataset

            pairs = base_pairs(cfg, load_stage_dataset(source, JUDGMENTS, "judgments"))
            run_proxy(cfg.margin_bayes.proxy, pairs, self.model_path(cfg.margin_bayes.proxy.model), out, cfg.seed)
            return True

        out = self.stage_dir("proxy", self.proxy_key(self._upstream("pairs", self.judge_key)))
        return self._run_in_place("proxy", out, work, {"config": cfg.margin_bayes.proxy, "input": source})

    def pairs(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        from prefopt.pairing.build import build_pairs
        from prefopt.pairing.proxy import load_implicit_margins
        from prefopt.pairing.report import REPORT_DIR, write_pairs_report
        from prefopt.schemas import JUDGMENTS, load_stage_dataset, save_stage_dataset

        source = self._input("pairs", input, "judge", lambda: self.stage_dir("judge", self.judge_key()))
        out = Path(output) if output else self.stage_dir("pairs", self.pairs_key())
        if self._already_done("pairs", out):
            return out
        cfg = self.recipe.pairing
        implicit = load_implicit_margins(self.proxy(source)) if cfg.margin_bayes else None

        def work(tmp: Path) -> None:
            judgments = load_stage_dataset(source, JUDGMENTS, "judgments")
            result = build_pairs(cfg, judgments, implicit)
            save_stage_dataset(result.dataset, tmp)
            (tmp / "stats.json").write_text(json.dumps(result.stats, indent=2))
            write_pairs_report(tmp / REPORT_DIR, result.kept, result.stats, result.built, result.scored)

        return self._run_stage("pairs", out, work, {"config": cfg, "input": source})

    def _train_source(self, given: str | Path | None) -> Path | DatasetSpec:
        """What the train stage reads: data given by hand, else the recipe's ``training.dataset``, else the output
        of the pairs stage."""
        if self.recipe.training.dataset is not None and not given and "train" not in self.inputs:
            return self.recipe.training.dataset
        return self._input("train", given, "pairs", lambda: self.stage_dir("pairs", self.pairs_key()))

    def train(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        """Train in place (not in a temporary directory) so that a crashed run resumes from its checkpoints."""
        source = self._train_source(input)
        t = self.recipe.training

        def work(out: Path) -> bool:
            from prefopt.training.data import prepare_training_data
            from prefopt.training.launch import launch_training

            data = prepare_training_data(source, t, out)  # checked before any model or rank starts
            launch_training(t, data, self.model_path(t.model), out)
            return True

        out = Path(output) if output else self.stage_dir("train", self.train_key())
        return self._run_in_place("train", out, work, {"config": t, "input": source})

    def write_train_config(self) -> Path:
        """The flat train config for this recipe's train stage, for launching its entry point by hand.

        Needs the pairs stage done (or ``training.dataset``) and the policy built; checks the training data (it
        never trains a model: many ranks call this).
        """
        from prefopt.training.data import prepare_training_data
        from prefopt.training.launch import write_train_config

        out = self.stage_dir("train", self.train_key())
        pairs = prepare_training_data(self._train_source(None), self.recipe.training, out)
        return write_train_config(
            self.recipe.training, pairs, self.model_path(self.recipe.training.model, build=False), out
        )

    def evaluate_ref(self, ref: str) -> dict:
        """Any model (a local directory, a hub id or 'world:<name>') on this recipe's evaluation sets, labelled and
        cached by ``ref`` (asked as the recipe's untrained models are: ``evaluation.system_prompt``)."""
        if ref.startswith(WORLD_PREFIX) and ref[len(WORLD_PREFIX) :] not in self.recipe.world.models:
            raise ConfigError(
                f"--model {ref}: not defined under world.models (defined: {sorted(self.recipe.world.models)})"
            )
        if (
            not ref.startswith(WORLD_PREFIX)
            and not Path(ref).exists()
            and (ref.startswith(("/", ".", "~")) or ref.count("/") > 1)
        ):
            raise FileNotFoundError(f"--model {ref}: no such directory (and not a hub id 'org/name')")
        return self.evaluate_model(ref, self.model_path(ref), self.model_key(ref))

    def evaluate_model(
        self, label: str, model_path: str, key: str, trained: bool = False, policy: bool = False
    ) -> dict:
        """One model's accuracy on every evaluation set (the trained policy may get its own system message; the
        policy, before and after training, is asked with ``training.chat_template`` where one is set)."""
        world = self.recipe.world
        settings = self._eval_settings(trained, policy)

        def work(tmp: Path) -> None:
            from prefopt.evaluation import accuracy
            from prefopt.schemas import save_stage_dataset

            predictions, summary = accuracy.evaluate_model(model_path, world, settings, system=settings.system_prompt)
            save_stage_dataset(predictions, tmp)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))

        out = self.stage_dir("eval", self.eval_key(key, trained, policy))
        self._run_stage(f"eval {label}", out, work, {"config": settings, "model": model_path})
        return json.loads((out / "summary.json").read_text())

    def _eval_settings(self, trained: bool, policy: bool = False):
        """The evaluation config as one model gets it: the trained policy may have its own system message, and the
        policy (before and after training) the chat template it is trained with, so both are asked alike."""
        cfg = self.recipe.evaluation
        system = cfg.trained_system_prompt if trained and cfg.trained_system_prompt is not None else cfg.system_prompt
        options = cfg.engine_options
        if (policy or trained) and self.recipe.training.chat_template is not None:
            options = {**options, "chat_template": self.recipe.training.chat_template}
        return dataclasses.replace(cfg, system_prompt=system, trained_system_prompt=None, engine_options=options)

    def eval_key(self, model_key: str, trained: bool = False, policy: bool = False) -> str:
        cfg, world = self.recipe.evaluation, self.recipe.world
        files = [self.fingerprint(b.path) for b in cfg.benchmarks]
        return self._key(
            "eval", self._eval_settings(trained, policy), world.in_domain, world.out_of_domain, files, model_key
        )

    def plan(self) -> list[dict]:
        """Every stage this recipe runs, in order, with its key, output directory and status, running nothing:
        ``complete``, ``damaged`` (finished, but files are missing or changed), ``partial`` (started; shards done
        so far) or ``missing``."""
        stages = []
        if self.recipe.training.dataset is None:  # else training reads that dataset: no generate, judge or pairs
            stages = [("generate", self.generate_key()), ("judge", self.judge_key())]
            if self.recipe.pairing.margin_bayes is not None:
                stages.append(("proxy", self.proxy_key(self._upstream("pairs", self.judge_key))))
            stages.append(("pairs", self.pairs_key()))
        stages.append(("train", self.train_key()))
        evals = [(f"eval {label}", key) for label, key in self.eval_keys().items()]
        rows = []
        for name, key in stages + evals:
            path = self.stage_dir(name.split()[0], key)
            rows.append({"stage": name, "key": key, "path": str(path), **stage_status(path)})
        return rows

    def model_labels(self) -> tuple[str, str]:
        """Labels of the policy before and after training, e.g. 'policy (before DPO)'."""
        method = self.recipe.training.method.upper()
        return f"policy (before {method})", f"policy (after {method})"

    def evaluated_models(self) -> dict[str, tuple[str, bool]]:
        """Label -> (model reference, whether it is the policy) of every model evaluated before training."""
        before, _ = self.model_labels()
        models = {gen.name: (gen.model, False) for gen in self.recipe.generation.generators}
        models[before] = (self.recipe.training.model, True)
        return models

    def eval_keys(self) -> dict[str, str]:
        """Label -> eval key of every model in the results table, the trained policy last."""
        keys = {
            label: self.eval_key(self.model_key(ref), policy=policy)
            for label, (ref, policy) in self.evaluated_models().items()
        }
        keys[self.model_labels()[1]] = self.eval_key(self.train_key(), trained=True)
        return keys

    def evaluate(self) -> dict[str, dict]:
        """Accuracy of every generator, the policy before training and (if trained) after."""
        after = self.model_labels()[1]
        results = {
            label: self.evaluate_model(label, self.model_path(ref), self.model_key(ref), policy=policy)
            for label, (ref, policy) in self.evaluated_models().items()
        }
        trained = self.stage_dir("train", self.train_key())
        if is_complete(trained):
            results[after] = self.evaluate_model(after, str(trained / FINAL_MODEL_DIR), self.train_key(), trained=True)
        return results

    def report(self, accuracies: dict[str, dict], report_dir: Path | None = None, figures: bool = False) -> Path:
        """results.md / results.json in ``report_dir`` (default: the output directory), with intervals from the
        eval stages' per-problem scores and the trainer's per-gap-bucket metrics; ``figures``: PNG plots too."""
        from prefopt.evaluation.report import load_scores, write_report

        pairs_dir = self.stage_dir("pairs", self.pairs_key())
        stats = json.loads((pairs_dir / "stats.json").read_text()) if is_complete(pairs_dir) else None
        scores = {label: load_scores(path) for label, path in self.eval_dirs().items() if label in accuracies}
        state = self.stage_dir("train", self.train_key()) / "trainer_state.json"
        history = json.loads(state.read_text()).get("log_history", []) if state.is_file() else None
        return write_report(
            report_dir or self.root, self.recipe, accuracies, stats, self.model_labels(), scores, history, figures
        )

    def evaluated(self) -> dict[str, dict]:
        """The summaries of every finished evaluation of this run's models, running nothing."""
        return {label: json.loads((path / "summary.json").read_text()) for label, path in self.eval_dirs().items()}

    def eval_dirs(self) -> dict[str, Path]:
        """Label -> output directory of every finished evaluation of this run's models."""
        dirs = {label: self.stage_dir("eval", key) for label, key in self.eval_keys().items()}
        return {label: path for label, path in dirs.items() if is_complete(path)}

    def run(self, report_dir: Path | None = None) -> Path:
        """Every stage in order; with ``training.dataset`` set, training on it (no generate, judge or pairs)."""
        if self.recipe.training.dataset is None:
            self.generate()
            self.judge()
            self.pairs()
        self.train()
        return self.report(self.evaluate(), report_dir)


def stage_status(path: Path) -> dict:
    """``{"status": ..., "shards": n}`` of one stage's output directory (shards: finished shard files, if any)."""
    shards = len(list((path / "shards").rglob("*.parquet"))) if (path / "shards").is_dir() else 0
    if (path / MANIFEST).is_file():
        problems = output_problems(path)
        return {"status": "damaged", "problems": problems} if problems else {"status": "complete"}
    if path.is_dir():
        return {"status": "partial", "shards": shards}
    return {"status": "missing"}


def _generate_worker(
    recipe: Recipe,
    cache_dir: Path,
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

    g = recipe.generation
    pipeline = Pipeline(recipe, cache_dir)
    run_generation(g, load_prompts(g.prompts, recipe.world), pipeline.model_path, output, shard, num_shards, generators)


def replica_gpus(g: GenerationConfig, gen: GeneratorConfig) -> int:
    """GPUs one data-parallel replica of ``gen`` takes: its ``tensor_parallel_size`` x ``pipeline_parallel_size``
    (its engine_options merged over generation's); 0 for an engine that loads no weights (a server)."""
    from prefopt.generation.registry import ENGINES

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


def run_data_parallel(recipe: Recipe, cache_dir: Path, output: Path) -> None:
    """``data_parallel_size`` generation workers at a time, in parallel, each with its own engine and GPUs: one
    phase per group of generators that take the same number of GPUs per replica (:func:`parallel_layout`). Every
    sample's seed follows its prompt and sample index, so the candidates equal a single process's."""
    g = recipe.generation
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
                args=(recipe, cache_dir, output, i, workers, phase.devices[i], phase.generators),
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
