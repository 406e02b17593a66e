"""Dataset preparation: generate, collect, check and split fine-tuning data."""

from agentcycle.finetune.dataprep.leakage import Leak, find_leaks, normalise

__all__ = ["Leak", "find_leaks", "normalise"]
