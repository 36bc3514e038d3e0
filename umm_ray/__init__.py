"""umm_ray: distributed RLHF on Ray around the Upcycle-and-Merge MoE reward model (UMM-RM)."""

__version__ = "0.1.0"
