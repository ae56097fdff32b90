"""Run a recipe's stages in order, each into ``<output_dir>/<stage>/<key>/`` (:mod:`prefopt.stage_keys`), skipping
finished ones; then evaluate the models and write the report. The pipeline resolves what each stage reads (data
given by hand, data the recipe names, or the upstream stage's output) and runs its unit (:mod:`prefopt.stage`).

Stage code is imported when a stage runs, so keys and plans (``prefopt plan``) need no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefopt.cache import is_complete
from prefopt.errors import ConfigError
from prefopt.evaluation.stage import Evaluate
from prefopt.generation.stage import Generate
from prefopt.layout import FINAL_MODEL_DIR
from prefopt.pairing.stage import Pairs
from prefopt.stage import Stage, execute
from prefopt.stage_keys import UNITS, StageKeys
from prefopt.tasks.registry import TASKS, task
from prefopt.training.stage import Train


class Pipeline(StageKeys):
    """The stages of one recipe. Each method returns the stage's output directory."""

    def _source(self, stage: Stage, given: str | Path | None):
        """What ``stage`` reads: ``given`` (recorded, so that this stage's key and the later ones follow it), an
        input set when the pipeline was made, data the recipe names for it (``training.dataset``), or the finished
        output of the stage it reads."""
        name = stage.given_as or stage.name
        if given:
            self.inputs[name] = Path(given)
        if name in self.inputs:
            return self.inputs[name]
        if (spec := stage.dataset(self)) is not None:
            return spec
        path = self.output_dir(UNITS[stage.reads])
        if not is_complete(path):
            raise FileNotFoundError(
                f"{path}: the {stage.reads} stage has not run for this recipe; "
                f"run `prefopt {stage.reads}` first (or `prefopt run`)"
            )
        return path

    def _execute(self, stage: Stage, source, output: str | Path | None) -> Path:
        return execute(stage, self, source, Path(output) if output else self.output_dir(stage))

    def generate(self, output: str | Path | None = None, shard: int = 0, num_shards: int = 1) -> Path:
        """Generate (resumable); with ``num_shards > 1`` as one worker of many (:class:`Generate`)."""
        return self._execute(Generate(shard, num_shards), None, output)

    def judge(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        stage = UNITS["judge"]
        return self._execute(stage, self._source(stage, input), output)

    def proxy(self, source: Path) -> Path:
        """margin_bayes's proxy stage on ``source``, the judgments the pairs stage reads."""
        return self._execute(UNITS["proxy"], source, None)

    def pairs(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        """Pairs; with margin_bayes, after the proxy stage (run only while the pairs are not complete)."""
        source = self._source(UNITS["pairs"], input)
        out = Path(output) if output else self.output_dir(UNITS["pairs"])
        proxy = self.proxy(source) if self.recipe.pairing.margin_bayes is not None and not is_complete(out) else None
        return self._execute(Pairs(proxy), source, out)

    def train(self, input: str | Path | None = None, output: str | Path | None = None) -> Path:
        stage = UNITS["train"]
        return self._execute(stage, self._source(stage, input), output)

    def write_train_config(self) -> Path:
        """The flat train config for this recipe's train stage, for launching its entry point by hand.

        Needs the pairs stage done (or ``training.dataset``) and the policy built; checks the training data (it
        never trains a model: many ranks call this).
        """
        stage = Train()
        return stage.write_config(self, self._source(stage, None), self.output_dir(stage))

    def evaluate_ref(self, ref: str) -> dict:
        """Any model (a local directory, a hub id or 'world:<name>') on this recipe's evaluation sets, labelled and
        cached by ``ref`` (asked as the recipe's untrained models are: ``evaluation.system_prompt``)."""
        built = self._task_model(ref)
        if built is not None:
            owner, name = built
            names = task(owner).model_names(self.settings(owner))
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
        """One model's accuracy on every evaluation set, cached under its ``key`` (:class:`Evaluate`)."""
        stage = Evaluate(trained, policy)
        out = execute(stage, self, model_path, self.stage_dir(stage.name, self.key(stage, key)), f"eval {label}")
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
