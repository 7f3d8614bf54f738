"""`hone data check`: every problem in the data before any compute is spent.

Errors make training (or its evaluation) wrong; warnings make it weak. Each names the file and line.
Token lengths use the model's own chat template and fast tokenizer, in batches, so a 100,000-example
file is checked in well under a minute on a 2-core machine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hone.config import ModelConfig, TrainConfig
from hone.data import checks
from hone.data.formats import Example, load_examples
from hone.data.pii import find_pii
from hone.data.poisoning import duplicate_clusters, poisoning_warnings
from hone.data.sources import read_all
from hone.models.embedder import embed

MIN_EXAMPLES = {"sft": (10, 50), "pretrain": (1, 20), "dpo": (10, 100), "reward": (10, 100), "rl": (10, 50)}
PREFERENCE_METHODS = {"dpo", "reward"}


@dataclass
class SplitReport:
    name: str
    path: str
    format: str | None = None
    examples: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    token_lengths: dict[str, float] = field(default_factory=dict)
    truncation_rate: float = 0.0
    pii: dict[str, int] = field(default_factory=dict)


@dataclass
class DataReport:
    splits: list[SplitReport]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    estimate: dict[str, Any] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return len(self.errors) + sum(len(split.errors) for split in self.splits)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_count": self.error_count}


class CheckedSplit(NamedTuple):
    """One checked file, with what the cross-split and poisoning checks need of it."""

    report: SplitReport
    examples: list[Example]
    texts: list[str]
    duplicate_clusters: list[list[int]]


def example_text(example: Example) -> str:
    """Everything a person wrote in the example, for duplicate and PII checks."""
    parts = [m["content"] for m in example.messages]
    for reply in (example.chosen or []) + (example.rejected or []):
        parts.append(reply["content"])
    if example.text:
        parts.append(example.text)
    return "\n".join(parts)


def rendered_text(example: Example, render: Any) -> str:
    """The training text whose length is limited by max_length: the longer branch for pairs.

    `render` is a chat renderer (see `chat_renderer`), or None when the model has no usable
    chat template and the plain text is measured instead.
    """
    if example.kind == "text" or render is None:
        return example.text or example_text(example)
    messages = example.messages
    if example.kind == "preference":
        chosen, rejected = example.chosen or [], example.rejected or []
        longest = (
            chosen
            if sum(len(m["content"]) for m in chosen) >= sum(len(m["content"]) for m in rejected)
            else rejected
        )
        messages = messages + longest
    return render([{"role": m["role"], "content": m["content"]} for m in messages])


def chat_renderer(tokenizer: Any, template: str) -> Any:
    """A function chat -> training text: the tokenizer's public `apply_chat_template` with hone's template.

    transformers compiles the template once and caches it. Rendering this way costs about twice what
    calling that compiled template directly did (a private transformers function), ~1 s per 50,000 chats,
    small next to tokenising them.
    """

    def render(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)

    return render


def token_lengths(
    examples: list[Example], tokenizer: Any, template: str | None, batch: int = 2048
) -> list[int]:
    render = chat_renderer(tokenizer, template) if template else None
    texts = [rendered_text(example, render) for example in examples]
    lengths: list[int] = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]
        lengths.extend(len(ids) for ids in encoded)
    return lengths


def lines_of(examples: list[Example], indices: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(examples[i].line) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def check_split(
    name: str,
    path: Path,
    method: str,
    tokenizer: Any,
    template: str | None,
    max_length: int,
    fmt: str = "auto",
) -> CheckedSplit:
    """Check one file; returns the report, its examples, their texts and duplicate clusters (for the
    cross-split and poisoning checks)."""
    report = SplitReport(name=name, path=str(path))
    records, read_errors = read_all(path)
    examples, format_errors = load_examples(records, fmt=fmt)
    report.errors.extend(read_errors + format_errors)
    report.examples = len(examples)
    report.format = Counter(e.kind for e in examples).most_common(1)[0][0] if examples else None
    check_content(report, examples, method, name)
    texts = [example_text(e) for e in examples]
    clusters = check_duplicates_and_pii(report, examples, texts)
    if examples:
        lengths = token_lengths(examples, tokenizer, template)
        report.token_lengths = asdict(checks.length_stats(lengths))
        report.truncation_rate = checks.truncation_rate(lengths, max_length)
        over = [i for i, length in enumerate(lengths) if length > max_length]
        if over:
            report.warnings.append(
                f"{path}: {len(over)} example(s) ({report.truncation_rate:.1%}) longer than "
                f"max_length={max_length} tokens will be truncated: lines {lines_of(examples, over)}"
            )
    return CheckedSplit(report, examples, texts, clusters)


def check_content(report: SplitReport, examples: list[Example], method: str, split: str) -> None:
    path = report.path
    for example in examples:
        if example.kind == "preference" and example.chosen == example.rejected:
            report.errors.append(
                f"{path} line {example.line}: chosen: identical to rejected (nothing to learn)"
            )
    wants_pairs = method in PREFERENCE_METHODS
    wrong_kind = [e for e in examples if (e.kind == "preference") != wants_pairs and e.kind != "text"]
    if wrong_kind and method != "pretrain":
        needed = (
            "preference pairs (prompt/chosen/rejected)"
            if wants_pairs
            else "chat or prompt/completion examples"
        )
        report.errors.append(
            f"{path}: method {method!r} needs {needed}; {len(wrong_kind)} example(s) are not"
        )
    if split == "train":
        minimum, recommended = MIN_EXAMPLES.get(method, (10, 50))
        if 0 < len(examples) < minimum:
            report.errors.append(f"{path}: {len(examples)} examples; {method} needs at least {minimum}")
        elif 0 < len(examples) < recommended:
            report.warnings.append(
                f"{path}: only {len(examples)} examples; {recommended}+ recommended for {method}"
            )


def check_duplicates_and_pii(
    report: SplitReport, examples: list[Example], texts: list[str]
) -> list[list[int]]:
    """Warn on duplicates and PII; returns the duplicate clusters, for the flood check."""
    path = report.path
    exact = checks.exact_duplicates(texts)
    near = checks.near_duplicates(texts)
    for group in exact:
        report.warnings.append(f"{path}: exact duplicates at lines {lines_of(examples, group)}")
    for pair in near:
        first, second = examples[pair.first].line, examples[pair.second].line
        report.warnings.append(
            f"{path}: near duplicates at lines {first} and {second} (similarity {pair.similarity:.2f})"
        )
    found: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        for hit in find_pii(text):
            found.setdefault(hit.kind, []).append(index)
    for kind, indices in sorted(found.items()):
        report.pii[kind] = len(indices)
        report.warnings.append(
            f"{path}: possible {kind} in {len(indices)} example(s): lines {lines_of(examples, indices)}"
            " (hone data prepare --redact-pii removes them)"
        )
    return duplicate_clusters(len(texts), exact, near)


def check_leakage(report: DataReport, train: CheckedSplit, other: CheckedSplit) -> None:
    train_report, train_examples, train_texts, _ = train
    other_report, other_examples, other_texts, _ = other
    for overlap in checks.cross_split_overlap(train_texts, other_texts):
        where = (
            f"{other_report.path} line {other_examples[overlap.other_index].line} overlaps "
            f"{train_report.path} line {train_examples[overlap.train_index].line}"
        )
        if overlap.exact:
            report.errors.append(f"{where}: the same example is in train and {other_report.name} (leakage)")
        else:
            report.warnings.append(
                f"{where}: near duplicate across splits (similarity {overlap.similarity:.2f})"
            )


def planned_epochs(train: TrainConfig, examples: int) -> float:
    """Epochs the config will run: `max_steps` wins over `epochs` when set."""
    if train.max_steps is None or examples == 0:
        return train.epochs
    return train.max_steps * train.batch_size * train.gradient_accumulation / examples


def run_data_check(
    splits: dict[str, Path],
    model_path: Path,
    max_length: int,
    train: TrainConfig,
    fmt: str = "auto",
    opt_in: ModelConfig | None = None,
    outliers: bool = False,
) -> DataReport:
    """Check every split, then the leakage between train and the held-out splits, then the train split for
    signs of poisoning (hone.data.poisoning; examples far from the rest by embedding only with `outliers`,
    which embeds every example). The time and cost of training on the train split is `hone estimate`'s:
    hone.estimate_report.data_check_estimate, which sits above the data stage. `opt_in` is the config's
    model section (whether the tokenizer may run code)."""
    from hone.models.resolve import load_tokenizer
    from hone.models.templates import training_chat_template

    tokenizer = load_tokenizer(model_path, opt_in)
    template = training_chat_template(tokenizer)
    checked = {
        name: check_split(name, path, train.method, tokenizer, template, max_length, fmt)
        for name, path in splits.items()
    }
    report = DataReport(splits=[result[0] for result in checked.values()])
    if template is None:
        report.warnings.append(
            f"{model_path}: chat template has no generation markers and no shipped template matches it; "
            "loss cannot be restricted to assistant turns"
        )
    if "train" in checked:
        for name, result in checked.items():
            if name != "train":
                check_leakage(report, checked["train"], result)
        check_poisoning(report, checked["train"], outliers)
    return report


def check_poisoning(report: DataReport, train: CheckedSplit, outliers: bool) -> None:
    """Floods of near duplicates, trigger phrases and (with `outliers`) examples far from the rest."""
    embedding = embed if outliers else None
    report.warnings.extend(
        poisoning_warnings(train.report.path, train.examples, train.duplicate_clusters, embedding)
    )
