"""Widgets only. Never imports torch, transformers, peft or llama_cpp directly."""
