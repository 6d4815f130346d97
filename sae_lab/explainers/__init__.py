"""Explanation methods, one sub-package each, all writing `explanations/<method>.jsonl` (see `sae_lab.run`)."""
