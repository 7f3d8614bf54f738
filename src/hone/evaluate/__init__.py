"""Evaluation: the ladder of prompting, few-shot, RAG and fine-tuned rungs on one held-out set."""
