"""The identity of a recipe's stages, running nothing: each stage's key, output directory and models, and the plan.

The stages are the units of :mod:`prefopt.stage` (``prefopt/<stage>/stage.py``), ordered here. A stage's key is a
content hash of its own config section, a per-stage format version, and the identity of
everything it reads: its input stage's key (or, for an ``--input`` given by hand or a ``training.dataset``, that
data's content fingerprint), the models it uses (tiny-world specs, or a local directory's content), and the files
its config names (prompt files, rubric files, benchmark files). So a rerun of an unchanged recipe on unchanged inputs
finds every output complete and does no work, any changed input reruns what depends on it, and two recipes that
share a prefix of stages share those outputs. Secrets never enter a key (:func:`prefopt.cache.is_secret_key`).
Keys and plans (``prefopt plan``) need no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from prefopt.cache import (
    MANIFEST,
    cached_fingerprint,
    content_hash,
    default_cache_dir,
    file_fingerprint,
    is_complete,
    output_problems,
)
from prefopt.evaluation.stage import Evaluate
from prefopt.generation.stage import Generate
from prefopt.hub import looks_like_hub_id, resolve_revision
from prefopt.judging.stage import Judge
from prefopt.layout import FINAL_MODEL_DIR, stage_dir
from prefopt.pairing.stage import Pairs, Proxy
from prefopt.stage import Stage, StageOutcome
from prefopt.tasks.registry import TASKS, model_task, task, task_settings
from prefopt.training.stage import Train
from prefopt.user_data import source_key

if TYPE_CHECKING:
    from prefopt.recipe import Recipe
    from prefopt.rounds import Rounds

ORDER = (Generate(), Judge(), Proxy(), Pairs(), Train())  # the stages of one round, in the order they run
UNITS: dict[str, Stage] = {stage.name: stage for stage in (*ORDER, Evaluate())}
FORMAT_VERSIONS = {name: stage.version for name, stage in UNITS.items()}


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

    def once(self, key: object, compute: Callable[[], str]) -> str:
        """``compute()`` the first time ``key`` is asked for, then the remembered value (keys chain: every later
        stage's key recomputes the earlier ones, and hashing a large input each time is real I/O)."""
        if key not in self._content:
            self._content[key] = compute()
        return self._content[key]

    def fingerprint(self, path: str | Path) -> str:
        """:func:`file_fingerprint` of ``path``, once per pipeline."""
        return self.once(("file", str(Path(path).resolve())), lambda: file_fingerprint(path))

    # -- models ---------------------------------------------------------------------------------------------
    def model_key(self, ref: str) -> str:
        """A tiny-world model's spec, a policy this run trains (a later round's: its train key, known before it
        trains), a local model's content (every file), a hub id with the commit it resolves to (:mod:`prefopt.hub`),
        or a served model's name as given."""
        built = self._task_model(ref)
        if built is not None:
            return task(built[0]).model_key(built[1], self.settings(built[0]))
        if Path(ref).name == FINAL_MODEL_DIR and Path(ref).parent.parent == self.root / "train":
            return content_hash("trained", Path(ref).parent.name)
        if Path(ref).exists():
            return content_hash("local", cached_fingerprint(ref, self.cache_dir))
        if looks_like_hub_id(ref):
            return content_hash("id", ref, self.once(("hub", ref), lambda: resolve_revision(ref)))
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
        path, cached = task(owner).build_model(name, self.settings(owner), self.cache_dir, build)
        self.outcomes.append(StageOutcome(f"model {name}", path, "cached" if cached else "ran"))
        self._model_paths[ref] = str(path)
        return str(path)

    # -- keys -----------------------------------------------------------------------------------------------
    def settings(self, name: str):
        """Task ``name``'s settings: its section of the recipe."""
        return task_settings(self.recipe, name)

    def key(self, stage: Stage, upstream: str | None = None) -> str:
        """``stage``'s key over ``upstream`` (an evaluated model's key), by default the identity of what it reads:
        data given by hand, else data the recipe names for it, else the key of the stage whose output it reads."""
        if upstream is None and stage.reads is not None:
            given = self.inputs.get(stage.given_as or stage.name)
            spec = stage.dataset(self)
            if given is not None:
                upstream = self.input_key(given)
            elif spec is not None:
                upstream = self.once(("dataset", repr(spec)), lambda: source_key(spec))
            else:
                upstream = self.key(UNITS[stage.reads])
        return stage.key(self, upstream)

    def output_dir(self, stage: Stage) -> Path:
        """``stage``'s output directory for this recipe."""
        return self.stage_dir(stage.name, self.key(stage))

    def generate_key(self) -> str:
        return self.key(UNITS["generate"])

    def judge_key(self) -> str:
        return self.key(UNITS["judge"])

    def pairs_key(self) -> str:
        return self.key(UNITS["pairs"])

    def proxy_key(self) -> str:
        return self.key(UNITS["proxy"])

    def train_key(self) -> str:
        return self.key(UNITS["train"])

    def eval_key(self, model_key: str, trained: bool = False, policy: bool = False) -> str:
        return self.key(Evaluate(trained, policy), model_key)

    def stage_dir(self, name: str, key: str) -> Path:
        return stage_dir(self.root, name, key)

    # -- evaluations ----------------------------------------------------------------------------------------
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
        stages = [(stage.name, self.key(stage)) for stage in ORDER if stage.used(self.recipe)]
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
