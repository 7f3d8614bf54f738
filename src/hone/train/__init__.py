"""Training: SFT, pretraining, DPO, reward models and RL, full, LoRA or QLoRA, into a run folder."""
