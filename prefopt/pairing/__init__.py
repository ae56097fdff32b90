"""The pairs stage: pair-construction strategies, selections (sample-level delta, margin_bayes), relabelling."""
