"""The prompting rungs of the ladder: the prompts each one sends for every test example.

All three run the base model on the same test examples; they differ only in the prompt:
- zero-shot: the task's own prompt (its system prompt and the user's turn);
- few-shot: k worked examples from the train split as earlier turns of the conversation, the most
  similar ones by embedding (or a seeded random sample), the most similar closest to the question;
- rag: the top-k chunks of the knowledge base, by embedding similarity to the user's turn, appended
  to the system prompt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hone.config import FewShotSettings, RagSettings
from hone.data.formats import Example
from hone.data.tokenize import prompt_messages
from hone.errors import HoneError
from hone.evaluate.retrieval import Chunk, load_knowledge, nearest
from hone.models.embedder import embed

Messages = list[dict[str, Any]]

RAG_HEADER = "Reference excerpts from the knowledge base (use them where they help):"


@dataclass
class PromptRung:
    name: str
    description: str
    prompts: list[Messages]
    # what was added to each prompt (few-shot example lines, retrieved chunk sources), for the report
    context: list[list[str]] = field(default_factory=list)


def query_text(messages: Messages) -> str:
    """What retrieval matches on: the last user turn of the prompt."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""


def split_system(messages: Messages) -> tuple[list[Messages], Messages]:
    system = [m for m in messages[:1] if m["role"] == "system"]
    return [system], messages[len(system) :]


def zero_shot(test: list[Example]) -> PromptRung:
    return PromptRung(
        "zero-shot", "base model, the task's own prompt", [prompt_messages(e.messages) for e in test]
    )


def few_shot(train: list[Example], test: list[Example], settings: FewShotSettings, seed: int) -> PromptRung:
    demos = [e for e in train if e.kind == "chat" and e.messages and e.messages[-1]["role"] == "assistant"]
    if len(demos) < settings.k:
        raise HoneError(
            f"evaluate.few_shot.k is {settings.k} but the train split has {len(demos)} chat examples "
            "ending in an assistant reply"
        )
    prompts = [prompt_messages(e.messages) for e in test]
    if settings.selection == "nearest":
        demo_vectors = embed([query_text(prompt_messages(d.messages)) for d in demos])
        picks = nearest(embed([query_text(p) for p in prompts]), demo_vectors, settings.k).tolist()
    else:
        rng = random.Random(seed)
        picks = [rng.sample(range(len(demos)), settings.k) for _ in prompts]
    rung = PromptRung("few-shot", f"base model, {settings.k} {settings.selection} examples from train", [])
    for prompt, chosen in zip(prompts, picks, strict=True):
        [system], question = split_system(prompt)
        turns: Messages = []
        for index in reversed(chosen):  # most similar last, next to the question
            _, demo = split_system(demos[index].messages)
            turns.extend(demo)
        rung.prompts.append(system + turns + question)
        rung.context.append([f"{demos[i].source}:{demos[i].line}" for i in chosen])
    return rung


def rag(test: list[Example], settings: RagSettings) -> PromptRung:
    if settings.knowledge is None:
        raise HoneError("evaluate.rag.knowledge: the RAG rung needs a knowledge base (a folder of .md/.txt)")
    chunks = load_knowledge(settings.knowledge, settings.chunk_words)
    prompts = [prompt_messages(e.messages) for e in test]
    picks = nearest(embed([query_text(p) for p in prompts]), embed([c.text for c in chunks]), settings.top_k)
    rung = PromptRung("rag", f"base model, top {settings.top_k} chunks of {settings.knowledge}", [])
    for prompt, chosen in zip(prompts, picks.tolist(), strict=True):
        retrieved = [chunks[i] for i in chosen]
        rung.prompts.append(with_knowledge(prompt, retrieved))
        rung.context.append([c.source for c in retrieved])
    return rung


def with_knowledge(prompt: Messages, chunks: list[Chunk]) -> Messages:
    """The prompt with the chunks appended to its system message (one is added when it has none)."""
    excerpts = "\n\n".join(f"[{c.source}]\n{c.text}" for c in chunks)
    [system], rest = split_system(prompt)
    instructions = system[0]["content"] + "\n\n" if system else ""
    return [{"role": "system", "content": f"{instructions}{RAG_HEADER}\n\n{excerpts}"}, *rest]
