"""The pairs stage: pair-construction strategies and the sample-level delta filter."""
