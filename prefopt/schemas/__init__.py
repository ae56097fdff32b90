"""The on-disk datasets through which stages talk, and checks that an input has what a stage needs.

``columns.py`` holds every dataset's columns (``docs/schemas.md`` explains each one) and loads and saves a stage's
dataset; ``training_data.py`` checks training data in TRL's formats row by row.
"""

from prefopt.errors import DataError
from prefopt.schemas.columns import (
    CANDIDATES,
    CANDIDATES_OPTIONAL,
    DATA_DIR,
    EVAL_PREDICTIONS,
    JUDGMENTS,
    JUDGMENTS_OPTIONAL,
    PAIRS,
    PAIRS_OPTIONAL,
    TRAIN_OPTIONAL,
    TRAIN_PAIRS,
    TRAIN_UNPAIRED,
    UNPAIRED,
    UNPAIRED_OPTIONAL,
    arrow_dataset,
    load_stage_dataset,
    require_columns,
    save_stage_dataset,
)
from prefopt.schemas.training_data import (
    TrainingData,
    check_training_data,
    prompt_conversation,
    prompt_problem,
    split_implicit_prompt,
)

__all__ = [
    "CANDIDATES",
    "CANDIDATES_OPTIONAL",
    "DATA_DIR",
    "EVAL_PREDICTIONS",
    "JUDGMENTS",
    "JUDGMENTS_OPTIONAL",
    "PAIRS",
    "PAIRS_OPTIONAL",
    "TRAIN_OPTIONAL",
    "TRAIN_PAIRS",
    "TRAIN_UNPAIRED",
    "UNPAIRED",
    "UNPAIRED_OPTIONAL",
    "DataError",
    "TrainingData",
    "arrow_dataset",
    "check_training_data",
    "load_stage_dataset",
    "prompt_conversation",
    "prompt_problem",
    "require_columns",
    "save_stage_dataset",
    "split_implicit_prompt",
]
