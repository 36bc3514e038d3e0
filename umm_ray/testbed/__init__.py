"""umm_ray.testbed: the embedded default world (no downloads, deterministic by seed).

world.py (task families, prompts, SFT responses), gold.py (programmatic gold reward + HF gold scorer), tokenizer.py,
models.py (tiny Llama / Qwen2 / GPT-NeoX / GPT-2), properties.py (reward-hacking properties a/b/c), prepare.py (the
prepare stage and gold labelling), pairs.py (the pairs stage: labelled samples of the SFT policy, via Ray). Import
the submodules directly; this package imports nothing heavy.
"""
