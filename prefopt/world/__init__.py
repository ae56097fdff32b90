"""The tiny reasoning world: arithmetic problems, a character-level tokenizer, and locally trained models."""
