"""Run a recipe's stages in order, each into ``<output_dir>/<stage>/<key>/``, skipping finished ones.

A stage's key is a content hash of its own config section and the keys of everything it reads (its input
stage, the models it uses), so a rerun of an unchanged recipe finds every output complete and does no work,
and two recipes that share a prefix of stages share those outputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import prefopt
from prefopt.cache import (atomic_output_dir, content_hash, default_cache_dir, file_fingerprint, is_complete,
                           mark_complete)
from prefopt.configs import ConfigError, Recipe
from prefopt.evaluation import accuracy
from prefopt.evaluation.report import write_report
from prefopt.generation.generate import load_prompts, run_generation
from prefopt.judging.judge import run_judging
from prefopt.pairing.build import base_pairs, build_pairs
from prefopt.pairing.proxy import load_implicit_margins, run_proxy
from prefopt.pairing.report import REPORT_DIR, write_pairs_report
from prefopt.schemas import CANDIDATES, JUDGMENTS, check_training_data, load_stage_dataset, save_stage_dataset
from prefopt.training.launch import FINAL_MODEL_DIR, launch_training, write_train_config
from prefopt.world.models import build_tiny_model

logger = logging.getLogger(__name__)

WORLD_PREFIX = "world:"


@dataclass(frozen=True)
class StageOutcome:
    name: str
    path: Path
    status: str  # "ran" or "cached"


class Pipeline:
    """The stages of one recipe. Each method returns the stage's output directory."""

    def __init__(self, recipe: Recipe, cache_dir: str | Path | None = None):
        self.recipe = recipe
        self.root = Path(recipe.output_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.outcomes: list[StageOutcome] = []
        self._model_paths: dict[str, str] = {}

    # -- models ---------------------------------------------------------------------------------------------
    def model_key(self, ref: str) -> str:
        if ref.startswith(WORLD_PREFIX):
            return self.recipe.world.models[ref[len(WORLD_PREFIX):]].cache_key()
        if Path(ref).exists():
            return content_hash("path", str(Path(ref).resolve()))
        return content_hash("id", ref)  # a hub id, or the name a server serves

    def model_path(self, ref: str, build: bool = True) -> str:
        """A model directory for ``ref``, building a tiny-world model first if it is not cached (and ``build``)."""
        if not ref.startswith(WORLD_PREFIX):
            return ref
        if ref in self._model_paths:
            return self._model_paths[ref]
        name = ref[len(WORLD_PREFIX):]
        spec = self.recipe.world.models[name]
        cached = is_complete(self.cache_dir / "models" / spec.cache_key())
        if not cached and not build:
            raise FileNotFoundError(f"{ref} is not built yet; `prefopt run` or `prefopt train` builds it")
        path = build_tiny_model(spec, self.cache_dir, desc=f"world:{name}")
        self.outcomes.append(StageOutcome(f"model {name}", path, "cached" if cached else "ran"))
        self._model_paths[ref] = str(path)
        return str(path)

    # -- keys -----------------------------------------------------------------------------------------------
    def generate_key(self) -> str:
        g = self.recipe.generation
        models = {gen.name: self.model_key(gen.model) for gen in g.generators}
        source = ((self.recipe.world.in_domain, self.recipe.world.out_of_domain) if g.prompts.source == "tiny_world"
                  else file_fingerprint(g.prompts.path))  # an edited prompt file is new input
        return content_hash("generate", prefopt.__version__, g, models, source)

    def judge_key(self) -> str:
        models = [self.model_key(ref) for ref in self.recipe.judging.model_refs]
        return content_hash("judge", prefopt.__version__, self.recipe.judging, self.generate_key(), models)

    def pairs_key(self) -> str:
        return content_hash("pairs", prefopt.__version__, self.recipe.pairing, self.judge_key())

    def proxy_key(self, upstream: str) -> str:
        """The proxy depends on the pairs it is trained on and scores, not on how margin_bayes then selects."""
        p = self.recipe.pairing
        base = dataclasses.replace(p, margin_bayes=None, reward_augmented=None)
        return content_hash("proxy", prefopt.__version__, base, p.margin_bayes.proxy, upstream,
                            self.model_key(p.margin_bayes.proxy.model))

    def train_key(self) -> str:
        t = self.recipe.training
        return content_hash("train", prefopt.__version__, t, self.pairs_key(), self.model_key(t.model))

    def stage_dir(self, name: str, key: str) -> Path:
        return self.root / name / key

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
        output.mkdir(parents=True, exist_ok=True)
        if work(output):
            mark_complete(output, {"stage": name, **manifest})
            self.outcomes.append(StageOutcome(name, output, "ran"))
        return output

    def _input(self, given: str | Path | None, default: Path, upstream: str) -> Path:
        path = Path(given) if given else default
        if not given and not is_complete(path):
            raise FileNotFoundError(f"{path}: the {upstream} stage has not run for this recipe; "
                                    f"run `prefopt {upstream}` first (or `prefopt run`)")
        return path

    def generate(self, output: str | Path | None = None, shard: int = 0, num_shards: int = 1) -> Path:
        """Generate in place, unit by unit, so that a killed run resumes where it stopped.

        With ``num_shards > 1`` this process is one worker of many; with ``generation.data_parallel_size > 1``
        it starts that many workers itself. Either way, the run that finds every unit done merges them.
        """
        g = self.recipe.generation

        def work(out: Path) -> bool:
            if num_shards == 1 and g.data_parallel_size > 1:
                run_data_parallel(self.recipe, self.cache_dir, out)
            merged = run_generation(g, load_prompts(g.prompts, self.recipe.world), self.model_path, out, shard,
                                    num_shards)
            if not merged:
                self.outcomes.append(StageOutcome(f"generate shard {shard}/{num_shards}", out, "ran"))
            return merged

        out = Path(output) if output else self.stage_dir("generate", self.generate_key())
        return self._run_in_place("generate", out, work, {"config": g})

    def judge(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        """Judge in place, shard by shard, so that a killed run resumes where it stopped."""
        source = self._input(input, self.stage_dir("generate", self.generate_key()), "generate")

        def work(out: Path) -> bool:
            candidates = load_stage_dataset(source, CANDIDATES, "candidates")
            run_judging(self.recipe.judging, candidates, out, self.model_path)
            return True

        out = Path(output) if output else self.stage_dir("judge", self.judge_key())
        return self._run_in_place("judge", out, work, {"config": self.recipe.judging, "input": source})

    def proxy(self, source: Path, explicit_input: bool) -> Path:
        """margin_bayes's proxy stage, in place (resumable): seed pairs, the proxy's DPO run, implicit margins."""
        cfg = self.recipe.pairing

        def work(out: Path) -> bool:
            pairs = base_pairs(cfg, load_stage_dataset(source, JUDGMENTS, "judgments"))
            run_proxy(cfg.margin_bayes.proxy, pairs, self.model_path(cfg.margin_bayes.proxy.model), out, cfg.seed)
            return True

        out = self.stage_dir("proxy", self.proxy_key(str(source.resolve()) if explicit_input else self.judge_key()))
        return self._run_in_place("proxy", out, work, {"config": cfg.margin_bayes.proxy, "input": source})

    def pairs(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        source = self._input(input, self.stage_dir("judge", self.judge_key()), "judge")
        out = Path(output) if output else self.stage_dir("pairs", self.pairs_key())
        if self._already_done("pairs", out):
            return out
        cfg = self.recipe.pairing
        implicit = load_implicit_margins(self.proxy(source, input is not None)) if cfg.margin_bayes else None

        def work(tmp: Path) -> None:
            judgments = load_stage_dataset(source, JUDGMENTS, "judgments")
            result = build_pairs(cfg, judgments, implicit)
            save_stage_dataset(result.dataset, tmp)
            (tmp / "stats.json").write_text(json.dumps(result.stats, indent=2))
            write_pairs_report(tmp / REPORT_DIR, result.kept, result.stats, result.built, result.scored)

        return self._run_stage("pairs", out, work, {"config": cfg, "input": source})

    def train(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        """Train in place (not in a temporary directory) so that a crashed run resumes from its checkpoints."""
        source = self._input(input, self.stage_dir("pairs", self.pairs_key()), "pairs")
        t = self.recipe.training

        def work(out: Path) -> bool:
            check_training_data(source, t.method)  # fail fast, before launching
            launch_training(t, source, self.model_path(t.model), out)
            return True

        out = Path(output) if output else self.stage_dir("train", self.train_key())
        return self._run_in_place("train", out, work, {"config": t, "input": source})

    def write_train_config(self) -> Path:
        """The flat train config for this recipe's train stage, for launching its entry point by hand.

        Needs the pairs stage done and the policy built (it never trains a model: many ranks call this).
        """
        pairs = self._input(None, self.stage_dir("pairs", self.pairs_key()), "pairs")
        out = self.stage_dir("train", self.train_key())
        out.mkdir(parents=True, exist_ok=True)
        return write_train_config(self.recipe.training, pairs, self.model_path(self.recipe.training.model, build=False),
                                  out)

    def evaluate_model(self, label: str, model_path: str, key: str, trained: bool = False) -> dict:
        """One model's accuracy on every evaluation set (the trained policy may get its own system message)."""
        cfg, world = self.recipe.evaluation, self.recipe.world
        system = cfg.trained_system_prompt if trained and cfg.trained_system_prompt is not None else cfg.system_prompt

        def work(tmp: Path) -> None:
            predictions, summary = accuracy.evaluate_model(model_path, world, cfg, system=system)
            save_stage_dataset(predictions, tmp)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))

        files = [file_fingerprint(b.path) for b in cfg.benchmarks]
        settings = dataclasses.replace(cfg, system_prompt=system, trained_system_prompt=None)  # what this model gets
        out = self.stage_dir("eval", content_hash("eval", prefopt.__version__, settings, world.in_domain,
                                                  world.out_of_domain, files, key))
        self._run_stage(f"eval {label}", out, work, {"config": settings, "model": model_path})
        return json.loads((out / "summary.json").read_text())

    def model_labels(self) -> tuple[str, str]:
        """Labels of the policy before and after training, e.g. 'policy (before DPO)'."""
        method = self.recipe.training.method.upper()
        return f"policy (before {method})", f"policy (after {method})"

    def evaluate(self) -> dict[str, dict]:
        """Accuracy of every generator, the policy before training and (if trained) after."""
        before, after = self.model_labels()
        refs = {gen.name: gen.model for gen in self.recipe.generation.generators}
        refs[before] = self.recipe.training.model
        results = {label: self.evaluate_model(label, self.model_path(ref), self.model_key(ref))
                   for label, ref in refs.items()}
        trained = self.stage_dir("train", self.train_key())
        if is_complete(trained):
            results[after] = self.evaluate_model(after, str(trained / FINAL_MODEL_DIR), self.train_key(), trained=True)
        return results

    def report(self, accuracies: dict[str, dict], report_dir: Path | None = None) -> Path:
        """results.md / results.json in ``report_dir`` (default: the output directory)."""
        pairs_dir = self.stage_dir("pairs", self.pairs_key())
        stats = json.loads((pairs_dir / "stats.json").read_text()) if is_complete(pairs_dir) else None
        return write_report(report_dir or self.root, self.recipe, accuracies, stats, self.model_labels())

    def run(self, report_dir: Path | None = None) -> Path:
        self.generate()
        self.judge()
        self.pairs()
        self.train()
        return self.report(self.evaluate(), report_dir)


def _generate_worker(recipe: Recipe, cache_dir: Path, output: Path, shard: int, num_shards: int,
                     devices: str | None) -> None:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before anything initialises CUDA in this process
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s prefopt[{shard}] %(levelname)s %(message)s")
    Pipeline(recipe, cache_dir).generate(output, shard, num_shards)


def run_data_parallel(recipe: Recipe, cache_dir: Path, output: Path) -> None:
    """One generation worker per ``tensor_parallel_size`` GPUs (or per process on CPU), in parallel."""
    g = recipe.generation
    workers = g.data_parallel_size
    tp = int(g.engine_options.get("tensor_parallel_size", 1))
    slices: list[str | None] = [None] * workers
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if len(gpus) < workers * tp:
            raise ConfigError(f"generation.data_parallel_size {workers} x tensor_parallel_size {tp} needs "
                             f"{workers * tp} GPUs; {len(gpus)} are visible")
        slices = [",".join(gpus[i * tp:(i + 1) * tp]) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_generate_worker, args=(recipe, cache_dir, output, i, workers, slices[i]))
                 for i in range(workers)]
    logger.info("Starting %d generation workers%s", workers,
                f" on GPUs {slices}" if slices[0] is not None else "")
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"generation workers {failed} failed; rerun to resume (finished shards are kept)")
