"""Attacks that test whether forgetting lasts: relearning and quantization."""
