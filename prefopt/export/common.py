"""What both exports share: the stage output to export (a recipe's, or a directory given as such), the empty output
directory, and the upload to the Hugging Face Hub."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from prefopt.cache import MANIFEST, is_complete
from prefopt.errors import ConfigError
from prefopt.recipe import Recipe, load_recipe


@dataclasses.dataclass
class Source:
    """A stage output to export, and the recipe it belongs to (None for a directory given as such)."""

    path: Path
    recipe: Recipe | None = None
    pipeline: object | None = None


def resolve(target: str, stage: str, overrides: list[str] | None = None, output_dir: str | None = None) -> Source:
    """A recipe's finished ``stage`` output, or ``target`` itself when it is a directory."""
    path = Path(target)
    if path.suffix not in (".yaml", ".yml"):
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such directory (expected a recipe YAML file or a {stage} directory)")
        return Source(path)
    from prefopt.pipeline import Pipeline

    recipe = load_recipe(path, overrides, check_trainers=False)
    if output_dir:
        recipe = dataclasses.replace(recipe, output_dir=output_dir)
    pipeline = Pipeline(recipe)
    if (rounds := pipeline.round_loop()) is not None:  # the last round's pairs and model
        pipeline = rounds.pipelines[-1]
        recipe = pipeline.recipe
    out = pipeline.stage_dir(stage, getattr(pipeline, f"{stage}_key")())
    if not is_complete(out):
        raise FileNotFoundError(f"{out}: the {stage} stage has not run for {path}; run `prefopt {stage}` first")
    return Source(out, recipe, pipeline)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def stage_input(stage_dir: Path) -> Path | None:
    """The directory a finished stage read (recorded in its manifest), if any."""
    given = (read_json(stage_dir / MANIFEST) or {}).get("input")
    return Path(given) if given else None


def empty_output(output: str | Path) -> Path:
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--output {out}: exists and is not an empty directory (the export writes a "
            "directory: give a new path or remove it)"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def push_to_hub(folder: Path, repo_id: str, repo_type: str) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` into it; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, commit_message="Upload with prefopt export"
        )
    except HfHubHTTPError as err:
        raise ConfigError(
            f"--push-to-hub {repo_id}: {str(err).splitlines()[0]} (the export is in {folder}; log in "
            "with `hf auth login` or set HF_TOKEN)"
        ) from None
    return str(getattr(commit, "commit_url", commit))
