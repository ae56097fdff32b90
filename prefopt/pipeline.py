"""Run a recipe's stages in order, each into ``<output_dir>/<stage>/<key>/`` (:mod:`prefopt.stage_keys`), skipping
finished ones; then evaluate the models and write the report.

Stage code is imported when a stage runs, so keys and plans (``prefopt plan``) need no torch.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from prefopt.cache import atomic_output_dir, is_complete, mark_complete
from prefopt.errors import ConfigError
from prefopt.generation.parallel import parallel_layout
from prefopt.layout import FINAL_MODEL_DIR
from prefopt.processes import ChildFailed
from prefopt.recipe import Recipe
from prefopt.stage_keys import StageKeys, StageOutcome
from prefopt.tasks.registry import TASKS, task, task_settings
from prefopt.user_data import DatasetSpec

logger = logging.getLogger(__name__)


class Pipeline(StageKeys):
    """The stages of one recipe. Each method returns the stage's output directory."""

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
                g, load_prompts(g.prompts, self._settings(g.prompts.source)), self.model_path, out, shard, num_shards
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
        built = self._task_model(ref)
        if built is not None:
            owner, name = built
            names = task(owner).model_names(self._settings(owner))
            if name not in names:
                raise ConfigError(
                    f"--model {ref}: not defined under {TASKS.get(owner).section}.models (defined: {names})"
                )
        elif not Path(ref).exists() and (ref.startswith(("/", ".", "~")) or ref.count("/") > 1):
            raise FileNotFoundError(f"--model {ref}: no such directory (and not a hub id 'org/name')")
        return self.evaluate_model(ref, self.model_path(ref), self.model_key(ref))

    def evaluate_model(
        self, label: str, model_path: str, key: str, trained: bool = False, policy: bool = False
    ) -> dict:
        """One model's accuracy on every evaluation set (the trained policy may get its own system message; the
        policy, before and after training, is asked with ``training.chat_template`` where one is set)."""
        tasks = {name: self._settings(name) for name in self.recipe.evaluation.tasks}
        settings = self._eval_settings(trained, policy)

        def work(tmp: Path) -> None:
            from prefopt.evaluation import accuracy
            from prefopt.schemas import save_stage_dataset

            predictions, summary = accuracy.evaluate_model(model_path, tasks, settings, system=settings.system_prompt)
            save_stage_dataset(predictions, tmp)
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2))

        out = self.stage_dir("eval", self.eval_key(key, trained, policy))
        self._run_stage(f"eval {label}", out, work, {"config": settings, "model": model_path})
        return json.loads((out / "summary.json").read_text())

    def evaluate(self) -> dict[str, dict]:
        """Accuracy of every generator, the policy before training and (if trained) after."""
        if (rounds := self.round_loop()) is not None:
            return rounds.evaluate()
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
        if (rounds := self.round_loop()) is not None:
            return rounds.report(accuracies, report_dir, figures)
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
        if (rounds := self.round_loop()) is not None:
            return rounds.evaluated()
        return {label: json.loads((path / "summary.json").read_text()) for label, path in self.eval_dirs().items()}

    def run(self, report_dir: Path | None = None) -> Path:
        """Every stage in order; with ``training.dataset`` set, training on it (no generate, judge or pairs)."""
        if (rounds := self.round_loop()) is not None:
            return rounds.run(report_dir)
        if self.recipe.training.dataset is None:
            self.generate()
            self.judge()
            self.pairs()
        self.train()
        return self.report(self.evaluate(), report_dir)


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
    prompts = load_prompts(g.prompts, task_settings(recipe, g.prompts.source))
    run_generation(g, prompts, pipeline.model_path, output, shard, num_shards, generators)


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
