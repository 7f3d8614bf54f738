"""Ollama Modelfiles: the chat template in Ollama's Go template language, stop tokens, system prompt.

Only ChatML is translated, and only after the tokenizer's own template is shown to render the same text
on probe chats: a Modelfile whose template differs from the one the model was trained with would quietly
make it worse.

The SYSTEM line is the system prompt the model was trained under: `data.system_prompt`, else the one
that (nearly) every training example starts with. Without it `ollama run` would answer under the model
family's default system prompt, a prompt the fine-tuned model never saw.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hone.data.formats import Example
from hone.data.load import load_split
from hone.errors import HoneError
from hone.models.templates import PROBE_CHATS
from hone.runs import FinishedRun

CHATML_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"
CHATML_SYSTEM = re.compile(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n", re.DOTALL)

# ChatML in Ollama's Go template syntax. Ollama puts the Modelfile's SYSTEM in front of .Messages when a
# request has no system message; a last assistant message is continued, as with HF's continue_final_message.
OLLAMA_CHATML = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
DEFAULT_SYSTEM<|im_start|>{{ .Role }}
{{ .Content }}
{{- if or (ne .Role "assistant") (not $last) }}<|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""
OLLAMA_DEFAULT_SYSTEM = (
    '{{- if and (eq $i 0) (ne .Role "system") }}<|im_start|>system\n{{ SYSTEM }}<|im_end|>\n{{ end }}'
)
MODELFILE_SYSTEM = re.compile(r'^SYSTEM """(.*?)"""$', re.DOTALL | re.MULTILINE)
# The share of training examples that must start with one system prompt for it to be the Modelfile's.
DOMINANT_SHARE = 0.9


@dataclass(frozen=True)
class SystemPrompt:
    """The system prompt a Modelfile carries (None: none), where it came from, and what callers must know."""

    text: str | None
    source: str
    warning: str | None = None


def run_system_prompt(run: FinishedRun) -> SystemPrompt:
    """`data.system_prompt`, else the one the run's training examples start with."""
    data = run.config.data
    if data.system_prompt:
        return SystemPrompt(data.system_prompt, "data.system_prompt")
    recorded = run.manifest.dataset.splits.get("train") if run.manifest.dataset else None
    paths = [Path(data.train), *([Path(recorded.path)] if recorded else [])]
    path = next((path for path in paths if path.exists()), None)
    if path is None:
        return SystemPrompt(
            None,
            "the training data",
            f"the training data ({data.train}) is not there to read its system prompt from; if its examples "
            "carry one, callers must send it as the system message of every request",
        )
    try:
        examples = load_split(path, None, data.format)
    except HoneError as exc:
        return SystemPrompt(
            None,
            str(path),
            f"{str(exc).splitlines()[0]}; so the Modelfile sets no system prompt: if the training examples "
            "carry one, callers must send it as the system message of every request",
        )
    found = training_system_prompt(examples, str(path))
    if recorded and len(examples) != recorded.examples:
        changed = f"{path} holds {len(examples)} examples, the run trained on {recorded.examples}"
        return SystemPrompt(found.text, found.source, "; ".join(filter(None, [changed, found.warning])))
    return found


def training_system_prompt(examples: list[Example], source: str) -> SystemPrompt:
    """The system prompt at least DOMINANT_SHARE of the chat examples start with (None when most have none);
    with a warning when some differ, or when no one prompt dominates and callers must send their own."""
    prompts = [first_system(example.messages) for example in examples if example.kind != "text"]
    if not prompts:
        return SystemPrompt(None, source)
    text, count = Counter(prompts).most_common(1)[0]
    others = len(prompts) - count
    if count >= DOMINANT_SHARE * len(prompts):
        warning = None
        if others and text is not None:
            warning = (
                f"{others} of {len(prompts)} training examples in {source} start with another system "
                "prompt or none; the Modelfile's SYSTEM is the one the others share"
            )
        return SystemPrompt(text, source, warning)
    distinct = {prompt for prompt in prompts if prompt is not None}
    carried = sum(prompt is not None for prompt in prompts)
    if len(distinct) == 1:
        shares = f"{carried} of {len(prompts)} start with one, the others with none"
    else:
        shares = f"{len(distinct)} different ones, on {carried} of {len(prompts)}"
    return SystemPrompt(
        None,
        source,
        f"the training examples in {source} share no one system prompt ({shares}), so the Modelfile sets "
        "none: callers must send the system prompt the model was trained with as the system message of "
        "every request",
    )


def first_system(messages: list[dict[str, Any]]) -> str | None:
    return messages[0]["content"] if messages and messages[0]["role"] == "system" else None


def modelfile_system(text: str) -> str | None:
    """The SYSTEM of a Modelfile hone wrote, or None."""
    found = MODELFILE_SYSTEM.search(text)
    return found.group(1) if found else None


def render_chatml(messages: list[dict[str, str]], default_system: str | None, generation: bool) -> str:
    """What OLLAMA_CHATML renders, in Python, so a tokenizer's template can be proven to equal it."""
    text = ""
    if messages and default_system is not None and messages[0]["role"] != "system":
        text += CHATML_TURN.format(role="system", content=default_system)
    for message in messages:
        text += CHATML_TURN.format(role=message["role"], content=message["content"])
    return text + ("<|im_start|>assistant\n" if generation else "")


def chatml_default_system(tokenizer: Any) -> str | None:
    """The system prompt a ChatML template adds when a chat has none (None: it adds none).

    Raises HoneError when the template is not ChatML on every probe chat: a Modelfile with a template
    that differs from the one the model was trained with would quietly make it worse.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise HoneError("the model's tokenizer has no chat template, so no Ollama TEMPLATE can be written")
    user = [{"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    prefix = rendered.removesuffix(render_chatml(user, None, True))
    found = CHATML_SYSTEM.fullmatch(prefix)
    default = found.group(1) if found else None
    same = not prefix or found
    for chat in PROBE_CHATS:
        for generation in (False, True):
            expected = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation)
            same = same and expected == render_chatml(chat, default, generation)
    if not same:
        raise HoneError(
            "the model's chat template is not ChatML (<|im_start|>role ... <|im_end|>), the only template "
            "hone translates into Ollama's template language; write the Modelfile's TEMPLATE by hand from "
            "the tokenizer's chat_template"
        )
    return default


def modelfile(gguf_name: str, tokenizer: Any, system_prompt: str | SystemPrompt | None = None) -> str:
    """An Ollama Modelfile: the GGUF, the chat template, the stop tokens and the run's system prompt (with a
    comment where callers must know more about it)."""
    system = (
        system_prompt
        if isinstance(system_prompt, SystemPrompt)
        else SystemPrompt(system_prompt or None, "data.system_prompt")
    )
    default = chatml_default_system(tokenizer)
    # A Go string literal reads like a JSON one; json.dumps also escapes any quote in the text.
    system_block = OLLAMA_DEFAULT_SYSTEM.replace("SYSTEM", json.dumps(default, ensure_ascii=False))
    template = OLLAMA_CHATML.replace("DEFAULT_SYSTEM", system_block if default is not None else "")
    stops = list(dict.fromkeys(["<|im_end|>", tokenizer.eos_token]))
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system.warning:
        lines.append(f"# {' '.join(system.warning.split())}")
    if system.text:
        if '"""' in system.text:
            where = "" if system.source == "data.system_prompt" else "the system prompt of "
            raise HoneError(f'{where}{system.source} contains """, which a Modelfile cannot quote')
        lines.append(f'SYSTEM """{system.text}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops if stop and '"' not in stop]
    return "\n".join(lines) + "\n"
