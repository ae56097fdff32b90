"""``python -m prefopt.slurm [DIR]``: rewrite ``scripts/generate_slurm.sh`` and ``scripts/train_slurm.sh`` (or
write them into DIR)."""

import sys
from pathlib import Path

from prefopt.slurm.bodies import SCRIPTS_DIR, write_generic_scripts

write_generic_scripts(Path(sys.argv[1]) if len(sys.argv) > 1 else SCRIPTS_DIR)
