"""The proxy of Less is More: DPO-train a small SFT model on a random seed set of the pairs, then score every
pair's implicit margin ``m_im = [log pi_1(y_w) - log pi_s(y_w)] - [log pi_1(y_l) - log pi_s(y_l)]`` with it.

Runs in place in its stage directory, each step resumable: ``seed_pairs/`` (written atomically), ``train/``
(the DPO run; resumes from its checkpoints), ``data/`` (``pair_id``, the two log-ratios and
``implicit_margin``, written atomically). Scoring runs ``batch_size`` pairs per forward pass on each visible GPU
(one rank each; :func:`prefopt.training.implicit.score_pair_logratios`) and frees the proxy and its reference when
done.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, load_from_disk

from prefopt.cache import atomic_output_dir, atomic_write, is_complete, mark_complete
from prefopt.pairing.build import to_dataset
from prefopt.pairing.candidates import sort_pairs, tiebreak_keys
from prefopt.pairing.config import ProxyConfig
from prefopt.schemas import DATA_DIR, save_stage_dataset
from prefopt.training.config import TrainingConfig
from prefopt.training.implicit import score_pair_logratios
from prefopt.training.launch import FINAL_MODEL_DIR, launch_training

logger = logging.getLogger(__name__)

SEED_DIR, TRAIN_DIR = "seed_pairs", "train"


def seed_set(pairs: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """A uniformly random subset of ``size`` pairs (all of them if there are fewer): those first in a seeded
    random order of pair_id, so it depends on ``seed`` and not on row order."""
    keys = tiebreak_keys(pairs["pair_id"], seed, "proxy seed set")
    return sort_pairs(pairs.iloc[np.argsort(keys, kind="stable")[:size]])


def run_proxy(cfg: ProxyConfig, pairs: pd.DataFrame, proxy_model: str, stage_dir: Path, seed: int) -> None:
    """Train the proxy on a seed set of ``pairs`` and write every pair's implicit margin to ``stage_dir/data``."""
    seed_dir, train_dir = stage_dir / SEED_DIR, stage_dir / TRAIN_DIR
    if not is_complete(seed_dir):
        with atomic_output_dir(seed_dir, {"seed_pairs": cfg.seed_pairs, "seed": seed}) as tmp:
            save_stage_dataset(to_dataset(seed_set(pairs, cfg.seed_pairs, seed)), tmp)
    if not is_complete(train_dir):
        logger.info("[proxy] DPO-training %s on %d seed pairs", proxy_model, min(cfg.seed_pairs, len(pairs)))
        training = TrainingConfig(method="dpo", model=cfg.model, accelerate_config=cfg.accelerate_config, trl=cfg.trl)
        launch_training(training, seed_dir, proxy_model, train_dir)
        mark_complete(train_dir, {"stage": "proxy train", "config": cfg})
    logger.info("[proxy] scoring the implicit margin of %d pairs", len(pairs))
    chosen, rejected = score_pair_logratios(  # batch_size per device, every visible GPU; memory freed after
        str(train_dir / FINAL_MODEL_DIR),
        proxy_model,
        Dataset.from_pandas(
            pairs[[c for c in ("prompt", "prompt_messages", "chosen", "rejected") if c in pairs.columns]],
            preserve_index=False,
        ),
        cfg.trl,
        cfg.batch_size,
    )
    margins = Dataset.from_dict(
        {
            "pair_id": pairs["pair_id"].tolist(),
            "chosen_logratio": chosen.tolist(),
            "rejected_logratio": rejected.tolist(),
            "implicit_margin": (chosen - rejected).tolist(),
        }
    )
    atomic_write(stage_dir / DATA_DIR, lambda tmp: margins.save_to_disk(str(tmp)))


def load_implicit_margins(stage_dir: Path) -> pd.Series:
    """The proxy stage's implicit margins, indexed by pair_id."""
    frame = load_from_disk(str(stage_dir / DATA_DIR)).to_pandas()
    return pd.Series(frame["implicit_margin"].to_numpy(), index=frame["pair_id"].to_numpy())
