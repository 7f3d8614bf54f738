"""The run folder's typed files: `manifest.json`, `metrics.json` (the training summary) and `ladder.json`.

These models are the hand-off between stages. Training writes a manifest and a training summary;
evaluation writes a ladder and its own manifest; export, the registry and serving read them. Every write
validates through a model here and every read parses through one, so a stage never digs into another's
JSON by hand, and a field renamed in one place fails a test instead of a production reader.

Each file carries a `format` number. A file with a higher number than this hone knows was written by a
newer hone: it is refused with a message saying so rather than misread. Unknown fields are refused too
(`extra="forbid"`), so a typo in a writer fails at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hone.errors import HoneError, clipped, value_problem
from hone.io import atomic_write_json

MANIFEST_FORMAT = 1
METRICS_FORMAT = 1
LADDER_FORMAT = 1

RunKind = Literal["training", "evaluation"]
RunStatus = Literal["running", "completed", "failed"]
Method = Literal["sft", "pretrain", "dpo", "reward", "rl"]
AdapterKind = Literal["lora", "qlora", "full"]


class Record(BaseModel):
    # Infinity stays Infinity on disk (a cost with zero throughput is infinite, not missing).
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


# The manifest ---------------------------------------------------------------------------------------


class CodeVersion(Record):
    hone: str = Field(description="hone's version.")
    git_commit: str | None = Field(None, description="The commit hone ran from, when run from a checkout.")
    git_dirty: bool | None = Field(None, description="Whether that checkout had uncommitted changes.")


class Hardware(Record):
    platform: str
    python: str
    torch: str
    cpu: str = Field(description="The CPU's model name.")
    cpu_bf16: str | None = Field(None, description="AMX, AVX512-BF16, or null when bf16 is emulated.")
    cpu_threads: int
    cuda: bool
    gpu: str | None = None
    gpu_count: int | None = None


class BaseModelRef(Record):
    reference: str = Field(description="The model reference as configured (alias, folder, GGUF or hub id).")
    path: str | None = Field(None, description="The Hugging Face folder it resolved to.")


class SplitRecord(Record):
    path: str
    examples: int


class DatasetRecord(Record):
    hash: str = Field(description="The dataset version: a content hash of every split.")
    splits: dict[str, SplitRecord]


class Distributed(Record):
    processes: int
    backend: str | None = None


class TrainingSummary(Record):
    steps: int
    train_loss: float | None = None
    eval_loss: float | None = None
    best_step: int | None = None
    best_metric: dict[str, float] | None = Field(None, description="{name: value} that chose the checkpoint.")
    seconds: float
    trained_tokens: int
    tokens_per_second: float | None = None
    truncated_examples: int
    distributed: str = Field(description="accelerate's distributed type: NO, MULTI_CPU, MULTI_GPU, FSDP, ...")
    precision: str = Field(description="What training computed in: fp32, bf16 or fp16.")
    attention: str = Field(description="The attention kernel that trained (transformers' name, or hone's).")
    layout: str = Field(description="How a step's examples were laid out: padded, padding-free or packed.")
    cpu_kernels: list[str] = Field(default_factory=list, description="hone's CPU kernels that ran.")


class Target(Record):
    metric: str
    min: float


class Recommendation(Record):
    rung: str | None = Field(None, description="The recommended rung, or null when none meets the target.")
    met_target: bool | None = Field(None, description="Whether it meets the target; null when none was set.")
    reason: str


class EvaluationLink(Record):
    """A training run's pointer to the evaluation that judged it (the quickstart's ladder)."""

    status: RunStatus
    run: str | None = Field(None, description="The evaluation run folder, relative to the training run's.")
    primary_metric: str | None = None
    baseline: str | None = None
    recommendation: Recommendation | None = None
    error: str | None = None


class Tracking(Record):
    uri: str
    experiment: str
    run_id: str


class Manifest(Record):
    """What a run is, from what, by which code, with which results: the lineage record of one run folder."""

    format: int = MANIFEST_FORMAT
    name: str
    kind: RunKind
    status: RunStatus
    created_at: str
    finished_at: str | None = None
    error: str | None = None
    code_version: CodeVersion
    hardware: Hardware
    base_model: BaseModelRef
    method: Method | None = Field(None, description="Training runs: the method trained.")
    adapter: AdapterKind | None = Field(None, description="Training runs: lora, qlora or full.")
    dataset: DatasetRecord | None = None
    distributed: Distributed | None = None
    resumed_from: str | None = Field(None, description="The checkpoint a resumed run continued from.")
    training: TrainingSummary | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Headline figures: a training run's scores from its evaluation, an evaluation run's "
        "primary metric per rung.",
    )
    evaluation: EvaluationLink | None = None
    candidates: list[str] | None = Field(None, description="Evaluation runs: the run folders evaluated.")
    recommendation: Recommendation | None = Field(None, description="Evaluation runs: the ladder's verdict.")
    evaluates: str | None = Field(None, description="An evaluation made for one training run: its folder.")
    artifacts: dict[str, str] = Field(default_factory=dict, description="Name -> path inside the folder.")
    tracking: Tracking | None = None


class TrainingMetrics(Record):
    """`metrics.json`: the training summary on its own, for tools that read only scores."""

    format: int = METRICS_FORMAT
    training: TrainingSummary


# The ladder -----------------------------------------------------------------------------------------


class Interval(Record):
    value: float
    low: float
    high: float


class Significance(Record):
    vs: str
    metric: str
    delta: float = Field(description="This rung minus the baseline.")
    low: float
    high: float
    p_value: float
    significant: bool


class FlippedExample(Record):
    index: int
    input: str
    reference: str
    before: str
    after: str


class Flips(Record):
    vs: str
    metric: str
    fixed: list[FlippedExample]
    broken: list[FlippedExample]
    fixed_count: int
    broken_count: int


class GeneralFigures(Record):
    probe_accuracy: float
    probe_accuracy_by_category: dict[str, float]
    perplexity: float
    delta_probe_accuracy: float
    delta_perplexity: float
    lm_eval: dict[str, dict[str, float]] | None = None
    delta_lm_eval: dict[str, dict[str, float]] | None = None


class Latency(Record):
    p50_seconds: float
    p95_seconds: float
    requests_per_second: float
    batch_size: int


class Tokens(Record):
    prompt_mean: float
    completion_mean: float


class Cost(Record):
    per_1000_requests: float
    training_one_off: float
    basis: str


class HistoryPoint(Record):
    step: int
    loss: float | None = None
    eval_loss: float | None = None


class RungTraining(Record):
    run: str
    method: str
    adapter: str
    train_seconds: float
    history: list[HistoryPoint]


class ReferenceLoss(Record):
    loss: float
    perplexity: float


class LadderRung(Record):
    name: str
    kind: Literal["prompting", "fine-tuned", "api"]
    description: str
    model: str
    metrics: dict[str, Interval]
    significance: Significance | None = None
    flips: Flips | None = None
    general: GeneralFigures | None = None
    latency: Latency
    tokens: Tokens
    cost: Cost
    training: RungTraining | None = None
    judge_unparsed: int | None = None
    reference_loss: ReferenceLoss | None = None

    def value(self, metric: str) -> float:
        return self.metrics[metric].value


class LadderTask(Record):
    test: str
    examples: int
    dataset_hash: str


class Ladder(Record):
    """`ladder.json`: every rung on one frozen test split, with statistics, costs and the verdict."""

    format: int = LADDER_FORMAT
    created: str
    task: LadderTask
    primary_metric: str
    device: str | None = None
    precision: str | None = None
    target: Target | None = None
    baseline: str
    rungs: list[LadderRung]
    recommendation: Recommendation

    def rung(self, name: str) -> LadderRung:
        return next(rung for rung in self.rungs if rung.name == name)

    @property
    def fine_tuned(self) -> list[LadderRung]:
        return [rung for rung in self.rungs if rung.kind == "fine-tuned"]


# Reading and writing --------------------------------------------------------------------------------

RecordT = TypeVar("RecordT", bound=Record)

KNOWN_FORMATS: dict[type[Record], int] = {
    Manifest: MANIFEST_FORMAT,
    TrainingMetrics: METRICS_FORMAT,
    Ladder: LADDER_FORMAT,
}


def parse(model: type[RecordT], value: Any, source: str | Path) -> RecordT:
    """Validate a decoded JSON value as `model`, or a HoneError naming the file and the first bad field."""
    if not isinstance(value, dict):
        raise HoneError(f"{source}: expected a JSON object, found {type(value).__name__}")
    known = KNOWN_FORMATS[model]
    written = value.get("format")
    if isinstance(written, int) and written > known:
        raise HoneError(
            f"{source}: written by a newer hone (format {written}; this hone reads up to {known}); "
            "upgrade hone to read it"
        )
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise HoneError(f"{source}: {clipped(field)}: {error['msg']}") from None


def read(model: type[RecordT], path: Path) -> RecordT:
    """Read one typed run file; a missing, truncated or foreign file is a HoneError, not a traceback."""
    if path.exists() and not path.is_file():  # a folder, or a FIFO or device that would block or never end
        raise HoneError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HoneError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HoneError(f"{path}: unreadable ({exc})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HoneError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); truncated?") from None
    except RecursionError:
        raise HoneError(f"{path}: not a run file: JSON nested too deeply to read") from None
    except ValueError as exc:  # a number longer than Python converts
        raise HoneError(f"{path}: not a run file: {value_problem(exc)}") from None
    return parse(model, value, path)


def to_json(record: Record) -> dict[str, Any]:
    """The record as the JSON object written to disk (unset optional fields left out)."""
    return record.model_dump(mode="json", exclude_none=True)


def write(record: Record, path: Path) -> None:
    atomic_write_json(path, to_json(record))
