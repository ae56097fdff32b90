"""The train stage: gap-aware losses, PrefDPOTrainer/PrefKTOTrainer on TRL, and their accelerate entry points."""
