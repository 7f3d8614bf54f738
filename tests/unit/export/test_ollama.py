"""hone.export.ollama on its own: the ChatML renderer by hand, which chat templates are translated and which
refused, and every line of the Modelfile. (The Go template rendered by Go itself: test_export.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from hone.errors import HoneError
from hone.export import ollama

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml_with_default(system: str) -> str:
    """ChatML that adds `system` when a chat has no system message, as SmolLM2's template does."""
    opening = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + system + "<|im_end|>\n{% endif %}"
    )
    return opening + CHATML


@pytest.fixture
def fresh_tokenizer(tiny_model_dir: Path) -> Any:
    """The real SmolLM2 tokenizer, a copy of its own to change the template and tokens of."""
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def template_of(modelfile: str) -> str:
    return modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]


def test_render_chatml_by_hand() -> None:
    user = [{"role": "user", "content": "Hi"}]
    assert ollama.render_chatml(user, None, False) == "<|im_start|>user\nHi<|im_end|>\n"
    assert ollama.render_chatml(user, None, True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ollama.render_chatml(user, "Be brief.", False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    with_system = [{"role": "system", "content": "Reply in JSON."}, *user]
    assert ollama.render_chatml(with_system, "Be brief.", False) == (
        "<|im_start|>system\nReply in JSON.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    ), "a chat's own system message replaces the default"
    assert ollama.render_chatml([], "Be brief.", True) == "<|im_start|>assistant\n"


def test_plain_chatml_has_no_default_system(fresh_tokenizer: Any) -> None:
    fresh_tokenizer.chat_template = CHATML

    assert ollama.chatml_default_system(fresh_tokenizer) is None
    text = ollama.modelfile("tuned-f16.gguf", fresh_tokenizer)

    assert template_of(text) == ollama.OLLAMA_CHATML.replace("DEFAULT_SYSTEM", "")
    assert "{{ SYSTEM }}" not in text and "(eq $i 0)" not in text


def test_the_default_system_prompt_is_found_and_quoted_as_a_go_string(fresh_tokenizer: Any) -> None:
    default = 'Answer "yes" or "no" — über kurz'
    fresh_tokenizer.chat_template = chatml_with_default(default)

    assert ollama.chatml_default_system(fresh_tokenizer) == default
    template = template_of(ollama.modelfile("m.gguf", fresh_tokenizer))

    go_string = json.dumps(default, ensure_ascii=False)
    assert go_string == '"Answer \\"yes\\" or \\"no\\" — über kurz"'
    block = ollama.OLLAMA_DEFAULT_SYSTEM.replace("SYSTEM", go_string)
    assert template == ollama.OLLAMA_CHATML.replace("DEFAULT_SYSTEM", block)
    assert "<|im_start|>system\n{{ " + go_string + " }}<|im_end|>" in template


@pytest.mark.parametrize(
    ("template", "why"),
    [
        (CHATML.replace("{{ message['content'] }}", "{{ message['content'] | trim }}"), "trims content"),
        (CHATML.replace("{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", ""), "no prompt"),
        ("<s>" + CHATML, "a BOS in front"),
        (CHATML.replace("in messages %}", "in messages if message['role'] != 'system' %}"), "drops system"),
        (
            "{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}\n{% endfor %}",
            "not ChatML at all",
        ),
    ],
)
def test_templates_that_only_look_like_chatml_are_refused(
    fresh_tokenizer: Any, template: str, why: str
) -> None:
    fresh_tokenizer.chat_template = template

    with pytest.raises(HoneError, match="is not ChatML") as raised:
        ollama.modelfile("m.gguf", fresh_tokenizer)

    assert "write the Modelfile's TEMPLATE by hand" in str(raised.value), why


def test_no_chat_template_no_modelfile(fresh_tokenizer: Any) -> None:
    fresh_tokenizer.chat_template = None
    with pytest.raises(HoneError, match="has no chat template, so no Ollama TEMPLATE can be written"):
        ollama.modelfile("m.gguf", fresh_tokenizer)


def test_every_line_of_the_modelfile(fresh_tokenizer: Any) -> None:
    text = ollama.modelfile("support-q8_0.gguf", fresh_tokenizer, "Reply in JSON.\nNo prose.")

    assert text.endswith("\n")
    head, template_and_rest = text.split('TEMPLATE """', 1)
    assert head == "FROM ./support-q8_0.gguf\n"
    rest = template_and_rest.split('"""', 1)[1]
    assert rest == '\nSYSTEM """Reply in JSON.\nNo prose."""\nPARAMETER stop "<|im_end|>"\n', (
        "the system prompt, then one stop: the end of turn is also the tokenizer's EOS"
    )


@pytest.mark.parametrize(
    ("eos", "stops"),
    [
        ("<|endoftext|>", ["<|im_end|>", "<|endoftext|>"]),
        ("<|im_end|>", ["<|im_end|>"]),
        ('</"end">', ["<|im_end|>"]),  # a stop with a quote cannot be written; left out
        (None, ["<|im_end|>"]),
    ],
)
def test_stop_tokens(fresh_tokenizer: Any, eos: str | None, stops: list[str]) -> None:
    fresh_tokenizer.eos_token = eos
    text = ollama.modelfile("m.gguf", fresh_tokenizer)
    found = [
        line.removeprefix("PARAMETER stop ") for line in text.splitlines() if line.startswith("PARAMETER")
    ]
    assert found == [f'"{stop}"' for stop in stops]


@pytest.mark.parametrize("system_prompt", [None, ""])
def test_no_system_prompt_no_system_line(fresh_tokenizer: Any, system_prompt: str | None) -> None:
    text = ollama.modelfile("m.gguf", fresh_tokenizer, system_prompt)
    assert not [line for line in text.splitlines() if line.startswith("SYSTEM")]
    assert text.splitlines()[-1] == 'PARAMETER stop "<|im_end|>"'


def test_a_system_prompt_that_cannot_be_quoted_is_refused(fresh_tokenizer: Any) -> None:
    with pytest.raises(HoneError, match=r'data\.system_prompt contains """'):
        ollama.modelfile("m.gguf", fresh_tokenizer, 'Wrap code in """ quotes.')


def chat_file(tmp_path: Path, systems: list[str | None]) -> list[Any]:
    """Chats read as training reads them (hone.data.load), the i-th starting with systems[i] (None: none)."""
    from hone.data.load import load_split

    rows = []
    for i, system in enumerate(systems):
        turns = [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "Answer."}]
        rows.append({"messages": ([{"role": "system", "content": system}] if system else []) + turns})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return load_split(path)


@pytest.mark.parametrize(
    ("systems", "text", "warned"),
    [
        (["Reply in JSON."] * 10, "Reply in JSON.", None),
        (
            ["Reply in JSON."] * 9 + [None],
            "Reply in JSON.",
            "1 of 10 training examples in train.jsonl start with",
        ),
        (
            ["Reply in JSON."] * 8 + [None] * 2,
            None,
            "share no one system prompt (8 of 10 start with one, the others with none)",
        ),
        (
            ["Reply in JSON.", "Reply in YAML."] * 5,
            None,
            "share no one system prompt (2 different ones, on 10 of 10)",
        ),
        ([None] * 10, None, None),  # trained under the template's own default: so is the Ollama model
        ([None] * 9 + ["Reply in JSON."], None, None),
    ],
)
def test_the_system_prompt_the_training_examples_share(
    tmp_path: Path, systems: list[str | None], text: str | None, warned: str | None
) -> None:
    found = ollama.training_system_prompt(chat_file(tmp_path, systems), "train.jsonl")

    assert found.text == text and found.source == "train.jsonl"
    if warned is None:
        assert found.warning is None
    else:
        assert found.warning is not None and warned in found.warning


def test_documents_carry_no_system_prompt(tmp_path: Path) -> None:
    from hone.data.load import load_split

    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "Refunds take five days."}\n', encoding="utf-8")
    assert ollama.training_system_prompt(load_split(path), str(path)) == ollama.SystemPrompt(None, str(path))


def test_a_warning_is_a_comment_in_place_of_the_system_line(fresh_tokenizer: Any) -> None:
    system = ollama.SystemPrompt(
        None, "train.jsonl", "the training examples carry 2 different\nsystem prompts"
    )
    text = ollama.modelfile("m.gguf", fresh_tokenizer, system)

    rest = text.split('"""', 2)[2]
    assert rest == '\n# the training examples carry 2 different system prompts\nPARAMETER stop "<|im_end|>"\n'
    assert ollama.modelfile_system(text) is None


def test_the_modelfiles_system_line_reads_back(fresh_tokenizer: Any) -> None:
    system = ollama.SystemPrompt("Reply in JSON.\nNo prose.", "train.jsonl")
    assert ollama.modelfile_system(ollama.modelfile("m.gguf", fresh_tokenizer, system)) == system.text

    quoted = ollama.SystemPrompt('Wrap code in """ quotes.', "data/train.jsonl")
    with pytest.raises(HoneError, match=r'the system prompt of data/train\.jsonl contains """'):
        ollama.modelfile("m.gguf", fresh_tokenizer, quoted)
