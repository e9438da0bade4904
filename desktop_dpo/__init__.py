"""desktop-dpo: collect preferences, train QLoRA-DPO, export GGUF and chat, all on your own machine."""

__version__ = "0.1.0"
