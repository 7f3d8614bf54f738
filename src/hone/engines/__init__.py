"""Generation engines that run outside hone's process and that serving and evaluation share.

`vllm`: vLLM's OpenAI server on GPUs, started by hone with the base model and the LoRA adapters. `hone
serve` forwards requests to it, and the ladder's local rungs generate through it, so a faster engine
speeds up both.
"""
