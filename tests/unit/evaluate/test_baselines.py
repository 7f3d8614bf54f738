"""The prompting rungs: chunking, retrieval and the prompts each rung sends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hone.config import FewShotSettings, RagSettings
from hone.data.load import load_split
from hone.errors import HoneError
from hone.evaluate import baselines
from hone.evaluate.retrieval import chunk_text, load_knowledge, nearest
from hone.models.embedder import embed

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support-tickets"


def test_chunks_follow_paragraphs_and_headings() -> None:
    text = "# Title\n\nalpha beta gamma\n\ndelta epsilon\n\n## Next\n\nzeta eta\n\n" + " ".join(["w"] * 25)
    chunks = chunk_text(text, max_words=10)
    # paragraphs join until a heading or the limit; the 25-word paragraph is cut into 10-word windows
    assert chunks == [
        "# Title\n\nalpha beta gamma\n\ndelta epsilon",
        "## Next\n\nzeta eta",
        " ".join(["w"] * 10),
        " ".join(["w"] * 10),
        " ".join(["w"] * 5),
    ]


def test_nearest_orders_by_cosine_and_can_skip_itself() -> None:
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    queries = np.array([[0.8, 0.6]])
    assert nearest(queries, keys, 2).tolist() == [[2, 0]]  # cosines 0.96, 0.80, 0.60
    assert nearest(keys, keys, 1, exclude_self=True).tolist() == [[2], [2], [1]]


def test_embeddings_put_the_same_topic_closest() -> None:
    vectors = embed(["I was charged twice for one invoice", "double charge on my card", "the app crashes"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert nearest(vectors[:1], vectors[1:], 1).tolist() == [[0]]


def test_rag_retrieves_the_alias_that_only_the_knowledge_base_explains() -> None:
    test = load_split(EXAMPLE / "test.jsonl")[:1]
    assert "payments hub" in test[0].messages[1]["content"]
    rung = baselines.rag(test, RagSettings(knowledge=EXAMPLE / "knowledge", top_k=2))
    [prompt] = rung.prompts
    assert prompt[0]["role"] == "system" and baselines.RAG_HEADER in prompt[0]["content"]
    assert prompt[0]["content"].startswith(test[0].messages[0]["content"]), (
        "the task's instructions stay first"
    )
    assert "nimbus-pay.md" in rung.context[0], "the chunk naming the 'payments hub' alias is retrieved"
    assert prompt[1:] == test[0].messages[1:-1], "the user's turn is unchanged and the answer is not leaked"


def test_few_shot_puts_the_nearest_examples_as_earlier_turns() -> None:
    train = load_split(EXAMPLE / "train.jsonl")
    test = load_split(EXAMPLE / "test.jsonl")[:3]
    rung = baselines.few_shot(train, test, FewShotSettings(k=3, selection="nearest"), seed=0)
    for prompt, example, context in zip(rung.prompts, test, rung.context, strict=True):
        roles = [m["role"] for m in prompt]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
        assert prompt[-1] == example.messages[-2], "the test question comes last"
        train_replies = {e.messages[-1]["content"] for e in train}
        assert all(m["content"] in train_replies for m in prompt if m["role"] == "assistant")
        assert len(context) == 3 and all(c.startswith(str(EXAMPLE / "train.jsonl")) for c in context)
    # the most similar example sits right before the question
    question = embed([test[0].messages[-2]["content"]])
    shown = embed([m["content"] for m in rung.prompts[0] if m["role"] == "user"][:-1])
    similarities = (shown @ question.T).ravel()
    assert similarities[-1] == pytest.approx(similarities.max())


def test_few_shot_random_is_seeded_and_refuses_too_few_examples() -> None:
    train = load_split(EXAMPLE / "train.jsonl")[:10]
    test = load_split(EXAMPLE / "test.jsonl")[:4]
    settings = FewShotSettings(k=2, selection="random")
    first = baselines.few_shot(train, test, settings, seed=3)
    again = baselines.few_shot(train, test, settings, seed=3)
    other = baselines.few_shot(train, test, settings, seed=4)
    assert first.prompts == again.prompts and first.prompts != other.prompts
    with pytest.raises(HoneError, match=r"evaluate.few_shot.k is 20 but the train split has 10"):
        baselines.few_shot(train, test, FewShotSettings(k=20), seed=0)


def test_knowledge_base_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match=r"knowledge base not found \(evaluate.rag.knowledge\)"):
        load_knowledge(tmp_path / "missing", 100)
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(HoneError, match=r"no \.md or \.txt files"):
        load_knowledge(tmp_path / "kb", 100)
