"""The generate stage: prompts, engines (transformers, vLLM, server) and resumable sharded generation."""
