"""The identity of a recipe's stages, running nothing: each stage's key, output directory and models, and the plan.

A stage's key is a content hash of its own config section, a per-stage format version, and the identity of
everything it reads: its input stage's key (or, for an ``--input`` given by hand or a ``training.dataset``, that
data's content fingerprint), the models it uses (tiny-world specs, or a local directory's content), and the files
its config names (prompt files, rubric files, benchmark files). So a rerun of an unchanged recipe on unchanged inputs
finds every output complete and does no work, any changed input reruns what depends on it, and two recipes that
share a prefix of stages share those outputs. Secrets never enter a key (:func:`prefopt.cache.is_secret_key`).
Keys and plans (``prefopt plan``) need no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import prefopt
from prefopt.cache import (
    MANIFEST,
    cached_fingerprint,
    content_hash,
    default_cache_dir,
    file_fingerprint,
    is_complete,
    output_problems,
)
from prefopt.hub import looks_like_hub_id, resolve_revision
from prefopt.layout import FINAL_MODEL_DIR, stage_dir
from prefopt.tasks.registry import TASKS, model_task, task, task_settings
from prefopt.user_data import source_key

if TYPE_CHECKING:
    from prefopt.recipe import Recipe
    from prefopt.rounds import Rounds

# Bump a stage's number when what it writes changes for the same config: its cached outputs are then redone.
FORMAT_VERSIONS = {"generate": 2, "judge": 2, "pairs": 2, "proxy": 2, "train": 2, "eval": 2}
# 2: strict judge parsing and math-verify; exact fraction counts and seeded ties; bounded, step-normalised gap
# weights and one fp32 log-prob path. generate 2: candidates keep the conversation (prompt_messages).


@dataclass(frozen=True)
class StageOutcome:
    name: str
    path: Path
    status: str  # "ran" or "cached"


class StageKeys:
    """The stages of one recipe as keys and output directories, running nothing (a task's model is built when its
    path is asked for); :class:`~prefopt.pipeline.Pipeline` runs them."""

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
        """A tiny-world model's spec, a policy this run trains (a later round's: its train key, known before it
        trains), a local model's content (every file), a hub id with the commit it resolves to (:mod:`prefopt.hub`),
        or a served model's name as given."""
        built = self._task_model(ref)
        if built is not None:
            return task(built[0]).model_key(built[1], self._settings(built[0]))
        if Path(ref).name == FINAL_MODEL_DIR and Path(ref).parent.parent == self.root / "train":
            return content_hash("trained", Path(ref).parent.name)
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

    def _task_model(self, ref: str) -> tuple[str, str] | None:
        """``(task, model name)`` where a task builds ``ref`` (``world:policy``: the tiny world's ``policy``)."""
        owner = model_task(ref)
        return None if owner is None else (owner, ref[len(TASKS.get(owner).model_prefix) :])

    def model_path(self, ref: str, build: bool = True) -> str:
        """A model directory for ``ref``, building a task's model (a tiny-world one) first if it is not cached (and
        ``build``)."""
        built = self._task_model(ref)
        if built is None:
            return ref
        if ref in self._model_paths:
            return self._model_paths[ref]
        owner, name = built
        path, cached = task(owner).build_model(name, self._settings(owner), self.cache_dir, build)
        self.outcomes.append(StageOutcome(f"model {name}", path, "cached" if cached else "ran"))
        self._model_paths[ref] = str(path)
        return str(path)

    # -- keys -----------------------------------------------------------------------------------------------
    def _key(self, stage: str, *parts) -> str:
        return content_hash(stage, prefopt.__version__, FORMAT_VERSIONS[stage], *parts)

    def generate_key(self) -> str:
        g = self.recipe.generation
        models = {gen.name: self.model_key(gen.model) for gen in g.generators}
        p = g.prompts  # the task's identity of its prompts: an edited prompt file is new input, a Hub dataset its id,
        # config, split and revision; the tiny world's splits
        source = self._once(("prompts", repr(p)), lambda: task(p.source).prompts_key(p, self._settings(p.source)))
        return self._key("generate", g, models, source)

    def _settings(self, name: str):
        """Task ``name``'s settings: its section of the recipe."""
        return task_settings(self.recipe, name)

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

    # -- evaluations ----------------------------------------------------------------------------------------
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
        """The evaluation settings, the identity of the own sets of every task the recipe holds a section for
        (evaluated or not, as it always was: the tiny world's splits), the benchmarks' data and the model."""
        cfg = self.recipe.evaluation
        tasks = [e.name for e in TASKS if e.section is not None and e.eval_sets]
        own = [part for name in tasks for part in task(name).eval_key(self._settings(name))]
        specs = [b.dataset_spec() for b in cfg.benchmarks]  # a file by its content, a Hub id by its commit
        sources = [
            self.fingerprint(s.path) if s.is_local else self._once(("dataset", repr(s)), lambda s=s: source_key(s))
            for s in specs
        ]
        return self._key("eval", self._eval_settings(trained, policy), *own, sources, model_key)

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

    def eval_dirs(self) -> dict[str, Path]:
        """Label -> output directory of every finished evaluation of this run's models."""
        dirs = {label: self.stage_dir("eval", key) for label, key in self.eval_keys().items()}
        return {label: path for label, path in dirs.items() if is_complete(path)}

    # -- the plan -------------------------------------------------------------------------------------------
    def round_loop(self) -> Rounds | None:
        """The rounds of a recipe with ``rounds.count > 1`` (:mod:`prefopt.rounds`): ``run``, ``plan``,
        ``evaluate``, ``evaluated`` and ``report`` then cover every round; None for one round."""
        if self.recipe.rounds.count == 1:
            return None
        from prefopt.rounds import Rounds

        return Rounds(self)

    def plan(self) -> list[dict]:
        """Every stage this recipe runs, in order, with its key, output directory and status, running nothing:
        ``complete``, ``damaged`` (finished, but files are missing or changed), ``partial`` (started; shards done
        so far) or ``missing``."""
        if (rounds := self.round_loop()) is not None:
            return rounds.plan()
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


def stage_status(path: Path) -> dict:
    """``{"status": ..., "shards": n}`` of one stage's output directory (shards: finished shard files, if any)."""
    shards = len(list((path / "shards").rglob("*.parquet"))) if (path / "shards").is_dir() else 0
    if (path / MANIFEST).is_file():
        problems = output_problems(path)
        return {"status": "damaged", "problems": problems} if problems else {"status": "complete"}
    if path.is_dir():
        return {"status": "partial", "shards": shards}
    return {"status": "missing"}
