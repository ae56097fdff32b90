"""The judge stage: judges score every candidate per rubric dimension; aggregate rules."""
