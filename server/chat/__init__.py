"""Chat: the answering pipeline, its prompts and checks, saved conversations."""
