"""Tasks as plugins: one module per task (its prompts, verifier, evaluation sets and models), found by
:data:`prefopt.tasks.registry.TASKS`."""
