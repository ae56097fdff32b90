"""``prefopt export pairs | model``: a run's data and trained model as files for use elsewhere, with a card.

- **pairs**: a pairs stage's output (from a recipe, or any pairs directory) in TRL's preference format,
  ``prompt``/``chosen``/``rejected`` (KTO examples: ``prompt``/``completion``/``label``), plain text, or chat
  messages where the data has a system message; every other column (the judged gap ``margin`` and ``margins``,
  the scores, generators, ids) kept as it is. ``train.jsonl`` or ``train.parquet`` (what ``datasets.load_dataset``
  reads as the train split), ``README.md`` (a dataset card: recipe, generators, judge, strategy, every count of
  ``stats.json``, a gap histogram) and ``gap_histogram.png`` (``score_histogram.png`` for KTO examples).
- **model**: a train stage's ``model/`` as safetensors, its tokenizer (with its chat template), generation config
  and ``README.md`` (a model card: base model, data, recipe, method and loss, the results table where the recipe's
  evaluations are done). A LoRA adapter (``adapter_config.json``) is exported as it is, or with ``merge_lora``
  merged into its base (peft ``merge_and_unload``) as a full model.

Either can then go to the Hugging Face Hub (``huggingface_hub`` ``create_repo`` and ``upload_folder``, with the
token of ``hf auth login`` or ``HF_TOKEN``).
"""

from prefopt.export.common import Source, push_to_hub, resolve
from prefopt.export.model import export_model
from prefopt.export.pairs import export_pairs, to_trl_format

__all__ = ["Source", "export_model", "export_pairs", "push_to_hub", "resolve", "to_trl_format"]
