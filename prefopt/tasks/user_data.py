"""The user's own data as a task, named ``file`` in recipes (``generation.prompts.source: file``): prompts from a
file, a directory or a Hub dataset (:func:`prefopt.generation.generate.prompts_from_file`), scored by the judge the
recipe's ``judging.judge`` names, evaluated on ``evaluation.benchmarks``."""

from __future__ import annotations

TASK = {
    "name": "file",
    "help": "The user's prompts: a file, a directory or a Hub dataset (generation.prompts.path).",
    "prompts": True,
}


class Task:
    def prompts(self, source, settings) -> list[dict]:
        from prefopt.generation.generate import prompts_from_file

        return prompts_from_file(source)

    def prompts_key(self, source, settings) -> str:
        """The data's identity: a local file's content; a Hub dataset's id, config, split and revision."""
        from prefopt.user_data import source_key

        return source_key(source.dataset_spec())
