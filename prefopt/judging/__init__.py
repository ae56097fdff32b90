"""The judge stage: verifiers, LLM judges on rubrics and reward models score every candidate per dimension."""
