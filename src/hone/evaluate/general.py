"""General-capability check: does a fine-tuned model still do what its base model could?

Fine-tuning on one narrow task can erode everything else (catastrophic forgetting). Two cheap signals
catch it without any network access, comparing a candidate with the base model it came from:

- probe accuracy: short questions with rule-checkable answers (facts, arithmetic, following a simple
  format instruction, reading a passage), shipped in `probes/general.jsonl`;
- perplexity on `probes/general_text.txt`, plain English prose the model never trained on; a rise means
  the model has drifted away from ordinary language.

Both numbers are only meaningful as a difference between two models scored the same way, which is what
`general_delta` reports.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hone.errors import HoneError, located
from hone.evaluate.generate import generate_chat
from hone.evaluate.metrics import mean_loss_and_perplexity

logger = logging.getLogger(__name__)

PROBES_DIR = Path(__file__).resolve().parent / "probes"
PROBE_FILE = PROBES_DIR / "general.jsonl"
TEXT_FILE = PROBES_DIR / "general_text.txt"
CATEGORIES = ("facts", "arithmetic", "instructions", "reading")
CHECKS = ("contains", "exact", "regex", "number")
SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer briefly: give only the answer, in as few words as possible."
)
PERPLEXITY_WINDOW = 512
PERPLEXITY_BATCH = 4

# digits with optional thousands separators and decimals, not the tail of a word ("CO2" holds no number);
# a unit may follow ("300km")
NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
ARTICLES = re.compile(r"\b(?:a|an|the)\b")
RESULT_MARKER = re.compile(r"(?i)=|\bequals?\b|\bis\b")
OPERATION = re.compile(r"(?i)[-+*/\u00d7\u00f7]|\b(?:plus|minus|times|x|divided by|multiplied by)\b")


@dataclass(frozen=True)
class Probe:
    id: str
    category: str
    question: str
    answers: tuple[str, ...]
    check: str
    pattern: str | None = None


@dataclass
class GeneralResult:
    probe_accuracy: float
    by_category: dict[str, float]
    perplexity: float
    per_probe: list[bool]  # in the order of `select_probes(load_probes(), limit)`
    outputs: list[str] = field(default_factory=list)


def load_probes(path: Path = PROBE_FILE) -> list[Probe]:
    """Read and validate a probe file; any bad record is a HoneError naming its line and field."""
    if not path.is_file():
        raise HoneError(f"{path}: probe file not found")
    probes: list[Probe] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HoneError(located(path, f"not valid JSON: {exc.msg}", number)) from None
        probe = _probe_from_record(record, path, number)
        if probe.id in first_line:
            problem = f"duplicate id {probe.id!r} (first on line {first_line[probe.id]})"
            raise HoneError(located(path, problem, number, "id"))
        first_line[probe.id] = number
        probes.append(probe)
    if not probes:
        raise HoneError(f"{path}: no probes")
    return probes


def _probe_from_record(record: Any, path: Path, line: int) -> Probe:
    def fail(field_name: str | None, problem: str) -> HoneError:
        return HoneError(located(path, problem, line, field_name))

    if not isinstance(record, dict):
        raise fail(None, "expected a JSON object")
    for key in ("id", "category", "question", "check"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise fail(key, "required, a non-empty string")
    unknown = sorted(set(record) - {"id", "category", "question", "answers", "check", "pattern"})
    if unknown:
        raise fail(unknown[0], "unknown field")
    answers = record.get("answers")
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise fail("answers", "required, a non-empty list of non-empty strings")
    check = record["check"]
    if check not in CHECKS:
        raise fail("check", f"is {check!r}; expected one of {', '.join(CHECKS)}")
    pattern = record.get("pattern")
    if check == "regex":
        if not isinstance(pattern, str) or not pattern:
            raise fail("pattern", "required for check 'regex', a regular expression")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise fail("pattern", f"not a valid regular expression: {exc}") from None
    elif pattern is not None:
        raise fail("pattern", f"only used by check 'regex', not {check!r}")
    if check == "number" and not all(NUMBER.fullmatch(answer.strip()) for answer in answers):
        raise fail("answers", 'check \'number\' needs answers that are numbers, like "42" or "3.5"')
    return Probe(record["id"], record["category"], record["question"], tuple(answers), check, pattern)


def select_probes(probes: list[Probe], limit: int | None) -> list[Probe]:
    """The first `limit` probes taking categories in turn, so a short run still covers every category."""
    if limit is None or limit >= len(probes):
        return list(probes)
    rank: dict[str, int] = {}
    keyed = []
    for position, probe in enumerate(probes):
        index_in_category = rank.get(probe.category, 0)
        rank[probe.category] = index_in_category + 1
        keyed.append((index_in_category, position, probe))
    return [probe for _, _, probe in sorted(keyed, key=lambda item: item[:2])[:limit]]


def probe_prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def normalise(text: str) -> str:
    """Lowercase, punctuation to spaces, no articles, single spaces: "The Nile." and "nile" compare equal."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(char if char.isalnum() or char.isspace() else " " for char in text)
    return " ".join(ARTICLES.sub(" ", text).split())


def parse_number(text: str) -> float | None:
    """The first number in the text ("1,250" is 1250), or None when there is none."""
    match = NUMBER.search(text.replace("\u2212", "-"))
    return float(match.group().replace(",", "")) if match else None


def _contains(output: str, probe: Probe) -> bool:
    padded = f" {normalise(output)} "
    return any(f" {normalise(answer)} " in padded for answer in probe.answers)


def _exact(output: str, probe: Probe) -> bool:
    said = normalise(output)
    return any(said == normalise(answer) for answer in probe.answers)


def stated_number(output: str) -> float | None:
    """The number a reply gives as its answer.

    Usually the first number; but a reply that restates the sum first ("53 + 69 = 122", "48 divided by 4
    equals 12") gives its answer after the "=", "equals" or "is" that follows the restatement.
    """
    for marker in RESULT_MARKER.finditer(output):
        before = output[: marker.start()]
        if NUMBER.search(before) and OPERATION.search(before):
            answer = parse_number(output[marker.end() :])
            if answer is not None:
                return answer
    return parse_number(output)


def _number(output: str, probe: Probe) -> bool:
    said = stated_number(output)
    return said is not None and any(said == parse_number(answer) for answer in probe.answers)


def _regex(output: str, probe: Probe) -> bool:
    return re.search(probe.pattern or "", output.strip()) is not None


SCORERS: dict[str, Callable[[str, Probe], bool]] = {
    "contains": _contains,
    "exact": _exact,
    "number": _number,
    "regex": _regex,
}


def probe_correct(output: str, probe: Probe) -> bool:
    """Whether one reply answers its probe, by the probe's check.

    contains: a normalised answer appears as whole words in the normalised reply; exact: the normalised
    reply equals an answer; number: the reply's first number (after the "=" of a restated sum) equals
    the answer; regex: the pattern is found in the reply (case-sensitive unless the pattern says
    otherwise).
    """
    return SCORERS[probe.check](output, probe)


def perplexity(
    model: Any, tokenizer: Any, text: str, window: int = PERPLEXITY_WINDOW, batch_size: int = 8
) -> float:
    """exp(mean next-token loss) over the text cut into back-to-back windows of `window` tokens.

    Windows do not overlap (stride = window), so each window's first token is context only; the window is
    capped at the model's maximum length. A base model and its fine-tunes share a tokenizer, so their
    perplexities compare; models with different tokenizers do not. At most PERPLEXITY_BATCH windows go
    through at once, because their logits (window x vocabulary floats each) are large.
    """
    window = min(window, int(getattr(model.config, "max_position_embeddings", window) or window))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = [ids[start : start + window] for start in range(0, len(ids), window)]
    chunks = [chunk for chunk in chunks if len(chunk) > 1]
    if not chunks:
        raise HoneError("perplexity text is too short: it needs at least two tokens")
    batch_size = max(1, min(batch_size, PERPLEXITY_BATCH))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll_sums: list[float] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            width = max(len(chunk) for chunk in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, chunk in enumerate(batch):
                input_ids[row, : len(chunk)] = torch.tensor(chunk)
                attention_mask[row, : len(chunk)] = 1
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()
            # the logit at position t predicts token t+1; padding (right-hand) is not scored
            targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
            nll = F.cross_entropy(
                logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="none"
            )
            nll_sums.extend(float(value) for value in nll.sum(dim=1).cpu())
    _, value = mean_loss_and_perplexity(nll_sums, [len(chunk) - 1 for chunk in chunks])
    return value


def general_check(
    model: Any, tokenizer: Any, batch_size: int, max_new_tokens: int = 32, limit: int | None = None
) -> GeneralResult:
    """Answer the shipped probes with greedy decoding and measure perplexity on the shipped text."""
    probes = select_probes(load_probes(), limit)
    generations = generate_chat(
        model, tokenizer, [probe_prompt(p.question) for p in probes], max_new_tokens, batch_size
    )
    outputs = [g.text for g in generations]
    per_probe = [probe_correct(output, probe) for output, probe in zip(outputs, probes, strict=True)]
    by_category: dict[str, list[bool]] = {}
    for probe, correct in zip(probes, per_probe, strict=True):
        by_category.setdefault(probe.category, []).append(correct)
    result = GeneralResult(
        probe_accuracy=sum(per_probe) / len(per_probe),
        by_category={name: sum(marks) / len(marks) for name, marks in by_category.items()},
        perplexity=perplexity(model, tokenizer, TEXT_FILE.read_text(encoding="utf-8"), batch_size=batch_size),
        per_probe=per_probe,
        outputs=outputs,
    )
    logger.info(
        "general check: %d probes, accuracy %.3f, perplexity %.2f",
        len(probes),
        result.probe_accuracy,
        result.perplexity,
    )
    return result


def general_delta(base: GeneralResult, other: GeneralResult) -> dict[str, Any]:
    """The ladder's "general" object for `other`, with its changes from the base model.

    A drop in probe accuracy or a rise in perplexity is forgetting. Both results must come from the same
    probes (the same `limit`), or the difference would compare different questions.
    """
    if len(base.per_probe) != len(other.per_probe):
        raise HoneError(
            f"general check: the base model answered {len(base.per_probe)} probes and the other model "
            f"{len(other.per_probe)}; run both with the same limit"
        )
    return {
        "probe_accuracy": other.probe_accuracy,
        "probe_accuracy_by_category": dict(other.by_category),
        "perplexity": other.perplexity,
        "delta_probe_accuracy": other.probe_accuracy - base.probe_accuracy,
        "delta_perplexity": other.perplexity - base.perplexity,
    }
