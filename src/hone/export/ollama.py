"""Ollama Modelfiles: the chat template in Ollama's Go template language, stop tokens, system prompt.

Only ChatML is translated, and only after the tokenizer's own template is shown to render the same text
on probe chats: a Modelfile whose template differs from the one the model was trained with would quietly
make it worse.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hone.errors import HoneError
from hone.models.templates import PROBE_CHATS

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


def modelfile(gguf_name: str, tokenizer: Any, system_prompt: str | None = None) -> str:
    """An Ollama Modelfile: the GGUF, the chat template, the stop tokens and the run's system prompt."""
    default = chatml_default_system(tokenizer)
    # A Go string literal reads like a JSON one; json.dumps also escapes any quote in the text.
    system_block = OLLAMA_DEFAULT_SYSTEM.replace("SYSTEM", json.dumps(default, ensure_ascii=False))
    template = OLLAMA_CHATML.replace("DEFAULT_SYSTEM", system_block if default is not None else "")
    stops = list(dict.fromkeys(["<|im_end|>", tokenizer.eos_token]))
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system_prompt:
        if '"""' in system_prompt:
            raise HoneError('data.system_prompt contains """, which a Modelfile cannot quote')
        lines.append(f'SYSTEM """{system_prompt}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops if stop and '"' not in stop]
    return "\n".join(lines) + "\n"
