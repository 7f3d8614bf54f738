"""HoneConfig: one typed config for the whole lifecycle, loaded from YAML plus dotted overrides.

Overrides (`train.learning_rate=1e-4`) are applied to the raw dict *before* validation, so an error in
an override names the same full path as an error in the file. The validated object is passed through
the program as is; stages read it, they never turn it back into a loose dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hone.config_text import apply_overrides, read_yaml
from hone.errors import HoneError, quoted

DEFAULT_MODEL = "smollm2-135m-instruct"

# hone's CPU training kernels (hone.train.cpu), in the order they are applied: train.cpu_kernels names them.
CPU_KERNELS = ("fast_dropout", "fused_lora", "attention", "rotary", "compiled_ops")

# Upper bounds on counts and sizes: far above any real use, low enough that a slip of the keyboard
# (`batch_size: 1.0e+12`, `epochs: 1e308`) is an error at validation, not a run that hangs or fails late.
MAX_TOKENS = 1_048_576  # a sequence, or the tokens generated for one answer
MAX_BATCH = 65_536  # examples in one forward pass, or forward passes in one optimizer step
MAX_STEPS = 100_000_000  # optimizer steps, and step intervals (eval, save, log, patience)
MAX_EXAMPLES = 1_000_000_000  # examples, probes or requests counted
MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit and not negative


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, and no number is NaN or infinite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Strict):
    reference: str = Field(
        DEFAULT_MODEL,
        description="Base model: built-in alias, local Hugging Face folder, local .gguf file or hub id.",
    )
    max_length: int = Field(
        512,
        ge=16,
        le=MAX_TOKENS,
        description="Longest tokenised example; longer ones follow the truncation policy.",
    )
    truncation: Literal["keep_start", "keep_end", "drop"] = Field(
        "keep_start",
        description="Too long: keep_start cuts the end, keep_end cuts the start, drop leaves it out.",
    )
    allow_pickle: bool = Field(
        False,
        description="Load pickle weights (pytorch_model.bin, .pt, .pth, .ckpt); a pickle can run code.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Run the Python code a model folder names in its config's auto_map (custom models).",
    )


# auto, or a format of hone.data.formats.FORMATS (tests/unit/test_config.py keeps the two the same).
DataFormat = Literal["auto", "messages", "alpaca", "prompt_completion", "preference", "openai_dpo", "text"]


class DataConfig(Strict):
    dataset: Path | None = Field(
        None,
        description="A dataset version folder (hone data prepare); its splits fill train/validation/test.",
    )
    train: Path = Field(description="Training examples: JSONL, JSON, CSV, Parquet or a `datasets` folder.")
    validation: Path | None = Field(None, description="Validation examples, for eval loss during training.")
    test: Path | None = Field(None, description="Frozen held-out examples for evaluation; never trained on.")
    format: DataFormat = Field(
        "auto", description="Data format: auto (detected per file) or the one format of every file."
    )
    system_prompt: str | None = Field(
        None,
        description="System prompt put in front of examples that have none; None leaves them as they are.",
    )

    @model_validator(mode="before")
    @classmethod
    def _splits_from_dataset(cls, data: Any) -> Any:
        """`dataset: data/versions/<hash>` stands for its train/validation/test files (explicit ones win)."""
        if isinstance(data, dict) and isinstance(data.get("dataset"), (str, Path)) and data["dataset"]:
            folder = Path(data["dataset"])
            data = {
                **{name: str(folder / f"{name}.jsonl") for name in ("train", "validation", "test")},
                **data,
            }
        return data


class LoraAdapter(Strict):
    kind: Literal["lora"] = Field("lora", description="Low-rank adapters on a frozen full-precision base.")
    r: int = Field(16, ge=1, le=65_536, description="Rank of the update matrices.")
    alpha: int = Field(
        32, ge=1, le=1_048_576, description="Scaling numerator: the update is scaled by alpha / r."
    )
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get adapters: 'all-linear' or a list of module names."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha / sqrt(r).")


class QLoraAdapter(LoraAdapter):
    kind: Literal["qlora"] = Field("qlora", description="LoRA on a 4-bit NF4 base (bitsandbytes).")  # type: ignore[assignment]


class FullAdapter(Strict):
    kind: Literal["full"] = Field("full", description="Every weight of the model is trained.")


Adapter = Annotated[LoraAdapter | QLoraAdapter | FullAdapter, Field(discriminator="kind")]


class DpoSettings(Strict):
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid", description="DPO loss: sigmoid (the paper's), ipo, hinge or robust (noisy labels)."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Assumed share of flipped labels; robust needs it above 0."
    )

    @model_validator(mode="after")
    def _robust_needs_noise(self) -> DpoSettings:
        if self.loss_type == "robust" and self.label_smoothing == 0:
            raise ValueError("loss_type robust needs label_smoothing > 0 (the share of flipped pairs)")
        return self


class RlSettings(Strict):
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="GRPO or RLOO (both from TRL).")
    reward: str | None = Field(
        None,
        description="'path/to/file.py:function' (a Python reward function) or a reward-model run folder.",
    )
    num_generations: int = Field(
        4, ge=2, le=MAX_BATCH, description="Completions sampled per prompt (the group)."
    )
    max_new_tokens: int = Field(64, ge=1, le=MAX_TOKENS, description="Longest sampled completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    beta: float = Field(0.0, ge=0, description="KL penalty towards the reference model; 0 needs none.")


class TrainConfig(Strict):
    method: Literal["sft", "pretrain", "dpo", "reward", "rl"] = Field(
        "sft",
        description="sft (chats), pretrain (documents), dpo and reward (preference pairs), rl (prompts).",
    )
    adapter: Adapter = Field(
        default_factory=LoraAdapter, description="full, lora or qlora, with its settings."
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; None picks 2e-4 for LoRA/QLoRA and 2e-5 for full."
    )
    epochs: float = Field(
        3.0, gt=0, le=1000, description="Passes over the training split (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Stop after this many optimizer steps."
    )
    batch_size: int = Field(4, ge=1, le=MAX_BATCH, description="Examples per device per forward pass.")
    gradient_accumulation: int = Field(
        1, ge=1, le=MAX_BATCH, description="Forward passes per optimizer step."
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps spent warming up the rate.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 on GPUs that support it and on CPUs with AMX or AVX512-BF16, fp32 on other "
        "CPUs (bf16 is emulated and far slower there: benchmarks/RESULTS.md). Fully trained weights stay "
        "fp32 under bf16 autocast.",
    )
    packing: bool = Field(
        False, description="Pack short examples into rows of model.max_length (no attention across them)."
    )
    padding_free: bool | Literal["auto"] = Field(
        "auto",
        description="Put each step's examples in one row without padding (restarting positions keep them "
        "apart). auto: on CPU where hone's attention trains the model (it attends within each example), "
        "off elsewhere; with other attention kernels the row gets one mask over all of it, quadratic in "
        "the step's tokens (on GPUs use flash or flex attention with it). Ignored with packing.",
    )
    attention: Literal["auto", "eager", "sdpa", "flex_attention"] = Field(
        "auto",
        description="Attention kernel while training. auto: on CPU hone's grouped-head attention for the "
        "model families it covers (faster than sdpa per LoRA step: benchmarks/RESULTS.md), the model's own "
        "elsewhere; on GPUs "
        "transformers' sdpa. flex_attention (GPUs only: it has no backward on CPU) keeps packed examples "
        "apart with a block-sparse mask instead of a dense one: pair it with packing.",
    )
    cpu_kernels: Literal["auto", "off"] | list[str] = Field(
        "auto",
        description="hone's CPU training kernels (hone.train.cpu). auto: each one that applies to the model "
        "when training on CPU (none on GPUs); off: transformers' and PEFT's own layers throughout; or a list "
        f"of some of: {', '.join(CPU_KERNELS)}. attention is what `attention: auto` means on CPU; without "
        "it auto means sdpa. The training summary lists the kernels that ran.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch SFT and pretraining examples of similar length so batches carry little padding "
        "(transformers' LengthGroupedSampler); ignored with packing. Off by default: on the example task it "
        'trained faster but lost exact match (benchmarks/RESULTS.md, "Quickstart wall time").',
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="auto: off on CPU (it only costs time there), on for models that need it on GPU."
    )
    eval_every: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Validation loss every N steps; None: once per epoch."
    )
    logging_steps: int = Field(5, ge=1, le=MAX_STEPS, description="Log loss and throughput every N steps.")
    save_every: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="Checkpoint every N steps for resume; None: at every validation (or once per epoch).",
    )
    keep_checkpoints: int = Field(
        2,
        ge=2,
        le=10_000,
        description="Newest checkpoints kept, at least 2 so one whole checkpoint survives a crash mid-save.",
    )
    keep_best: bool = Field(
        True, description="With a validation split, end with the weights of the lowest validation loss."
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="Stop after this many validations without a lower loss; None: never.",
    )
    report_to: list[str] = Field(
        default_factory=list, description="Extra live loggers passed to transformers: wandb, tensorboard."
    )
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seed for weights init, dropout and data order.")
    dpo: DpoSettings = Field(default_factory=DpoSettings, description="Settings of method dpo.")
    rl: RlSettings = Field(default_factory=RlSettings, description="Settings of method rl.")

    @model_validator(mode="before")
    @classmethod
    def _adapter_shorthand(cls, data: Any) -> Any:
        """`adapter: lora` (or `train.adapter=qlora`) means `adapter: {kind: lora}`; kind defaults to lora."""
        if isinstance(data, dict) and isinstance(data.get("adapter"), str):
            data = {**data, "adapter": {"kind": data["adapter"]}}
        if isinstance(data, dict) and isinstance(data.get("adapter"), dict) and "kind" not in data["adapter"]:
            data = {**data, "adapter": {"kind": "lora", **data["adapter"]}}
        return data

    @field_validator("cpu_kernels", mode="before")
    @classmethod
    def _known_kernels(cls, value: Any) -> Any:
        """One name alone means a list of it; every listed name must be a kernel hone has."""
        if isinstance(value, str) and value not in ("auto", "off"):
            value = [value]
        if isinstance(value, (list, tuple)):
            unknown = [name for name in value if name not in CPU_KERNELS]
            if unknown:
                raise ValueError(
                    f"unknown CPU kernel(s) {', '.join(map(repr, unknown))}; expected auto, off or a list of "
                    f"some of: {', '.join(CPU_KERNELS)}"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        own_attention = isinstance(self.cpu_kernels, list) and "attention" in self.cpu_kernels
        if own_attention and self.attention != "auto":
            raise ValueError(
                f"cpu_kernels lists attention (hone's CPU attention) but attention is {self.attention}; "
                "set attention: auto, or leave attention out of cpu_kernels"
            )
        if self.method == "rl" and not self.rl.reward:
            raise ValueError("rl.reward is required for method rl: 'file.py:function' or a reward-model run")
        if self.save_every and self.eval_every and self.keep_best and self.save_every % self.eval_every:
            raise ValueError(
                f"save_every ({self.save_every}) must be a multiple of eval_every ({self.eval_every}) so the "
                "best validation step has a checkpoint; or set keep_best: false"
            )
        return self

    def resolved_cpu_kernels(self) -> list[str]:
        """The CPU kernels asked for, in the order they are applied: all under auto, none under off."""
        if self.cpu_kernels == "auto":
            return list(CPU_KERNELS)
        if self.cpu_kernels == "off":
            return []
        return [name for name in CPU_KERNELS if name in self.cpu_kernels]

    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-5 if self.adapter.kind == "full" else 2e-4


class FewShotSettings(Strict):
    k: int = Field(
        3, ge=1, le=1024, description="Worked examples from the train split put before each test prompt."
    )
    selection: Literal["nearest", "random"] = Field(
        "nearest", description="nearest: most similar by embedding to the test prompt; random: seeded sample."
    )


class RagSettings(Strict):
    knowledge: Path | None = Field(
        None, description="Knowledge base: a folder of .md/.txt files, or one file; None skips the RAG rung."
    )
    top_k: int = Field(3, ge=1, le=1024, description="Chunks retrieved into each prompt.")
    chunk_words: int = Field(
        120, ge=10, le=MAX_TOKENS, description="Largest chunk, in words; chunks follow paragraphs."
    )


class TargetSettings(Strict):
    metric: str = Field(description="The task metric the bar is set on, e.g. exact_match.")
    min: float = Field(description="The lowest acceptable value of that metric (0-1 for rates).")


class CostSettings(Strict):
    hourly_price: float = Field(
        0.10,
        ge=0,
        description="Price per hour of the machine that serves (and trains) self-hosted rungs, USD.",
    )
    training_hourly_price: float | None = Field(
        None, ge=0, description="Price per hour of the training machine; None: the same as hourly_price."
    )
    requests: int = Field(
        1_000_000,
        ge=1,
        le=10**15,
        description="Requests the recommendation amortises one-off training cost over.",
    )


class GeneralSettings(Strict):
    enabled: bool = Field(True, description="Check general capability (forgetting) of fine-tuned rungs.")
    limit: int | None = Field(
        None,
        ge=1,
        le=MAX_EXAMPLES,
        description="Use N probes of the shipped set, taking the four categories in turn.",
    )
    max_new_tokens: int = Field(32, ge=1, le=MAX_TOKENS, description="Longest answer to a probe question.")
    lm_eval_tasks: list[str] = Field(
        default_factory=list,
        description="lm-evaluation-harness tasks run before and after (needs hone[lmeval]).",
    )
    lm_eval_include: Path | None = Field(None, description="Folder of local lm-evaluation-harness task YAML.")
    lm_eval_limit: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Examples per lm-evaluation-harness task."
    )


class JudgeSettings(Strict):
    model: str = Field(description="The judge: a model reference or a completed run folder.")
    rubric: str = Field(
        "Score how well the answer does what the question asks, with the reference answer as the standard.",
        description="What the judge grades on; it replies with a score from 1 to max_score.",
    )
    max_score: int = Field(5, ge=2, le=100, description="Top of the score scale (the bottom is 1).")
    max_new_tokens: int = Field(8, ge=1, le=MAX_TOKENS, description="Longest judge reply.")


class ApiRung(Strict):
    name: str = Field(description="The rung's name in the ladder.")
    base_url: str = Field(description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name sent in each request.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    input_price: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_price: float = Field(0.0, ge=0, description="USD per million completion tokens.")


class VllmSettings(Strict):
    """vLLM's OpenAI server, started by hone on a GPU machine with the base model and the LoRA adapters."""

    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one model is split over.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of each GPU's memory vLLM takes (weights plus KV cache)."
    )
    max_model_len: int | None = Field(
        None, ge=16, le=1_048_576, description="Longest prompt plus reply; None: the model's own."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="vLLM's --dtype.")
    extra_args: list[str] = Field(
        default_factory=list, description="More arguments for `vllm serve`, passed as they are."
    )
    startup_seconds: float = Field(
        900.0, gt=0, le=7200, description="How long vLLM may take to load before hone gives up on it."
    )


class LlamaCppSettings(Strict):
    """llama.cpp (llama-cpp-python) on CPU, over GGUF files hone exports from the served versions."""

    quant: Literal["Q4_K_M", "Q4_1", "Q8_0", "F16"] = Field(
        "Q4_K_M", description="Quantization of the GGUF files made for serving."
    )
    context: int = Field(4096, ge=128, le=1_048_576, description="Context length (prompt plus reply).")
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads; None: as many as torch uses (the physical cores)."
    )


class EvaluateConfig(Strict):
    engine: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="What generates the local rungs' answers: transformers (in this process) or vllm (GPUs: "
        "one vLLM server holds the base model and every candidate's LoRA adapter).",
    )
    vllm: VllmSettings = Field(default_factory=VllmSettings, description="The vllm engine.")
    json_schema: Path | None = Field(
        None,
        description="JSON Schema the outputs must follow; enables schema adherence and per-field scores.",
    )
    max_new_tokens: int = Field(96, ge=1, le=MAX_TOKENS, description="Longest generated answer.")
    batch_size: int = Field(
        64,
        ge=1,
        le=MAX_BATCH,
        description="Most prompts generated together (left-padded, KV cache); batches of long prompts hold "
        "fewer, within 32,768 tokens of prompt plus new tokens. Larger batches generate more tokens/s on CPU "
        "too (benchmarks/RESULTS.md); reported latency is the batch's wall time, so it grows with the batch.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Weights and compute of the evaluated local models (every local rung and a local judge "
        "alike); auto: bf16 on GPUs with bf16 and on CPUs with AMX or AVX512-BF16 (faster, with the same "
        "verdict on the quickstart's ladder: benchmarks/RESULTS.md), else fp32.",
    )
    limit: int | None = Field(
        None, ge=1, le=MAX_EXAMPLES, description="Evaluate only the first N test examples."
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="Task metrics to report; empty: JSON metrics when references are JSON, else text ones.",
    )
    regex: str | None = Field(None, description="A pattern every good reply matches (the `regex` metric).")
    scorer: str | None = Field(
        None,
        description="'path/to/file.py:function' scoring (output, reference) in [0, 1]: the `scorer` metric.",
    )
    rungs: list[Literal["zero-shot", "few-shot", "rag"]] = Field(
        default_factory=lambda: ["zero-shot", "few-shot", "rag"],
        description="Prompting rungs of the ladder, all on the base model.",
    )
    few_shot: FewShotSettings = Field(default_factory=FewShotSettings, description="The few-shot rung.")
    rag: RagSettings = Field(default_factory=RagSettings, description="The RAG rung.")
    candidates: list[Path] = Field(
        default_factory=list,
        description="Fine-tuned run folders (or registered versions, NAME/VERSION or NAME@ALIAS) evaluated "
        "as rungs of the ladder.",
    )
    api: list[ApiRung] = Field(default_factory=list, description="Hosted models (OpenAI-compatible APIs).")
    reference_loss: bool = Field(
        False, description="Also measure each model's loss and perplexity on the reference answers."
    )
    judge: JudgeSettings | None = Field(
        None, description="LLM-as-judge: adds the `judge` metric (score / max_score per example)."
    )
    target: TargetSettings | None = Field(
        None, description="The bar: the recommendation is the cheapest rung that meets it."
    )
    primary_metric: str | None = Field(
        None, description="Metric the rungs are compared on; None: target.metric, else exact_match."
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, le=1_000_000, description="Resamples for intervals and significance."
    )
    cost: CostSettings = Field(default_factory=CostSettings, description="Prices for cost per request.")
    general: GeneralSettings = Field(
        default_factory=GeneralSettings, description="General-capability (forgetting) check."
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of few-shot sampling and the bootstrap.")

    def resolved_primary_metric(self) -> str:
        if self.primary_metric:
            return self.primary_metric
        return self.target.metric if self.target else "exact_match"


MAX_RUN_NAME = 128  # characters; the quickstart adds "-ladder", and file systems stop at 255 bytes


def check_run_name(name: str) -> str:
    """A run name is one folder inside `run.dir`: a separator or `..` would put the run anywhere else."""
    if not name or len(name) > MAX_RUN_NAME:
        raise ValueError(f"must be 1 to {MAX_RUN_NAME} characters, got {len(name)}")
    if name in (".", ".."):
        raise ValueError("must be a folder name, not '.' or '..'")
    if "/" in name or "\\" in name:
        raise ValueError("must be one folder name inside run.dir, without '/' or '\\'")
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        raise ValueError("must not contain control characters")
    return name


class RunConfig(Strict):
    name: str | None = Field(
        None,
        description="Run folder name inside run.dir (one plain folder name); "
        "None: '<method>-<adapter>-<timestamp>'.",
    )
    dir: Path = Field(Path("runs"), description="Folder that holds run folders.")

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str | None) -> str | None:
        return None if name is None else check_run_name(name)


class TrackConfig(Strict):
    enabled: bool = Field(True, description="Log every run's params, metrics and artifacts to MLflow.")
    uri: str | None = Field(
        None, description="MLflow tracking URI; None: SQLite in .hone/ (HONE_TRACKING_URI overrides)."
    )
    experiment: str = Field("hone", description="MLflow experiment name.")


REGISTRY_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"  # what `hone registry` accepts as a model name
# A registered version: NAME/VERSION or NAME@ALIAS (MLflow reserves the aliases `latest` and `v<number>`).
REGISTRY_VERSION = (
    rf"(?P<name>{REGISTRY_NAME})(?:/(?P<version>[1-9]\d{{0,8}})|@(?P<alias>[a-z][a-z0-9_-]{{0,62}}))"
)


class GateSettings(Strict):
    general_tolerance: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Most general-probe accuracy (absolute) a candidate may lose against the alias's "
        "current holder and still be promoted.",
    )


class RegistryConfig(Strict):
    name: str | None = Field(
        None,
        pattern=f"^{REGISTRY_NAME}$",
        description="The quickstart registers its run as a new version of this model; None: it does not.",
    )
    promote_to: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_-]{0,62}$",
        description="The alias the quickstart then promotes that version to, through the gate.",
    )
    gate: GateSettings = Field(default_factory=GateSettings, description="The promotion gate's rules.")


class ServeConfig(Strict):
    engine: Literal["transformers", "vllm", "llama.cpp"] = Field(
        "transformers",
        description="What generates: transformers (CPU or GPU, in this process), vllm (GPUs: hone starts "
        "vLLM's server and routes to it) or llama.cpp (CPU, GGUF; the llama-cpp extra).",
    )
    vllm: VllmSettings = Field(default_factory=VllmSettings, description="The vllm engine.")
    llama_cpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings, description="The llama.cpp engine.")
    base_model: str | None = Field(
        None,
        description="The base model the server holds in memory; adapters over another base are not "
        "servable. None: model.reference.",
    )
    max_lora_rank: int = Field(
        64, ge=1, le=65_536, description="Largest LoRA rank the server loads (the promotion gate checks it)."
    )
    host: str = Field(
        "127.0.0.1", description="Address to listen on; 0.0.0.0 exposes the server to the network."
    )
    port: int = Field(8000, ge=0, le=65_535, description="Port to listen on (0: any free port).")
    routes: dict[str, dict[str, Annotated[int, Field(ge=0, le=1_000_000)]]] = Field(
        default_factory=dict,
        description="Route name -> {model reference: weight}: traffic split by weight, sticky per `user` "
        "(a canary: {support@production: 90, support@staging: 10}).",
    )
    max_adapters: int = Field(
        8, ge=1, le=4096, description="LoRA adapters kept loaded; the least recently used goes."
    )
    max_batch: int = Field(
        16, ge=1, le=MAX_BATCH, description="Most requests generated together in one batch."
    )
    max_queue: int = Field(
        64, ge=1, le=1_000_000, description="Requests waiting beyond this are answered 429 with Retry-After."
    )
    max_tokens: int = Field(512, ge=1, le=MAX_TOKENS, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(
        256, ge=1, le=MAX_TOKENS, description="max_tokens when a request names none."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, le=1 << 30, description="Largest request body accepted.")
    refresh_seconds: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="How often registry aliases are re-read: a promote or rollback takes "
        "effect within this many seconds.",
    )
    api_key_sha256: list[Annotated[str, Field(pattern="^[0-9a-f]{64}$")]] = Field(
        default_factory=list,
        description="sha256 hex digests of the accepted API keys (`hone serve-key` makes one); empty: no key "
        "needed, which is allowed only when listening on 127.0.0.1.",
    )
    requests_per_minute: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Most completion requests per minute for each API key (each client address without "
        "keys); beyond it 429 with Retry-After. None: no limit.",
    )
    request_log: str | None = Field(
        None, description="SQLAlchemy URL of the request log; None: SQLite in .hone/requests.db."
    )
    redact_pii: bool = Field(
        True, description="Redact e-mails, phones, cards, keys and IBANs before logging."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Weights and compute of the served models, as evaluate.precision."
    )


class MonitorThresholds(Strict):
    """Where `hone monitor --check` fails; None leaves a check out."""

    error_rate: float | None = Field(0.05, ge=0, le=1, description="Most failed requests, as a share.")
    p95_latency_seconds: float | None = Field(60.0, gt=0, description="Slowest 95th-percentile latency.")
    json_valid: float | None = Field(
        0.95, ge=0, le=1, description="Least share of answers that parse as JSON (with monitor.json_schema)."
    )
    schema_valid: float | None = Field(
        0.95, ge=0, le=1, description="Least share of answers that follow monitor.json_schema."
    )
    regex: float | None = Field(0.9, ge=0, le=1, description="Least share of answers matching monitor.regex.")
    mean_rating: float | None = Field(
        0.5, ge=0, le=1, description="Least mean feedback score (down 0, up 1; 1-5 mapped onto 0-1)."
    )
    drift_p_value: float | None = Field(
        0.01,
        gt=0,
        le=1,
        description="Input drift: the significance either test (MMD two-sample, or the share of prompts "
        "outside the split against its expected 5%) must reach.",
    )
    drift_share: float | None = Field(
        0.2,
        ge=0,
        le=1,
        description="Input drift: most share of prompts farther from the training split than its own 95th "
        "percentile (about 0.05 without drift).",
    )


class MonitorConfig(Strict):
    json_schema: Path | None = Field(
        None, description="JSON Schema every answer should follow: answers are checked as they are served."
    )
    regex: str | None = Field(None, description="A pattern every good answer matches (checked online).")
    train_split: Path | None = Field(
        None, description="The training examples recent prompts are compared with for input drift."
    )
    since: str = Field(
        "24h", pattern=r"^[0-9]+(\.[0-9]+)?[smhdw]$", description="Default window (30m, 24h, 7d)."
    )
    min_requests: int = Field(
        30, ge=1, le=1_000_000, description="Requests a version needs before its rates are judged."
    )
    thresholds: MonitorThresholds = Field(default_factory=MonitorThresholds, description="`--check` limits.")


class ServeFile(Strict):
    """`hone serve -c FILE`: the base model, the server and the registry's store."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The server.")
    monitor: MonitorConfig = Field(
        default_factory=MonitorConfig, description="Online checks, drift and thresholds (`hone monitor`)."
    )
    track: TrackConfig = Field(
        default_factory=TrackConfig, description="The MLflow store the registry is in."
    )


class HoneConfig(Strict):
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base model.")
    data: DataConfig = Field(description="Where the examples are.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="How to train.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="How to evaluate.")
    run: RunConfig = Field(default_factory=RunConfig, description="Where the run is recorded.")
    track: TrackConfig = Field(default_factory=TrackConfig, description="Experiment tracking (MLflow).")
    registry: RegistryConfig = Field(
        default_factory=RegistryConfig, description="Model versions, aliases and the promotion gate."
    )
    serve: ServeConfig = Field(default_factory=ServeConfig, description="What the model server can load.")


def without_union_tags(location: tuple[Any, ...]) -> list[Any]:
    """Drop the discriminator tag pydantic puts in paths (`train.adapter.lora.r` -> `train.adapter.r`)."""
    parts: list[Any] = []
    for part in location:
        if parts and parts[-1] == "adapter" and part in ("lora", "qlora", "full"):
            continue
        parts.append(part)
    return parts


SHOWN_PROBLEMS = 20  # config problems listed in one error


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the full dotted path of the field."""
    lines = [f"{source}: invalid config"]
    problems = error.errors()
    for item in problems[:SHOWN_PROBLEMS]:
        path = ".".join(str(part) for part in without_union_tags(item["loc"]))
        got = item.get("input")
        shown = "" if isinstance(got, dict) or item["type"] == "missing" else f" (got {quoted(got)})"
        lines.append(f"  {path}: {item['msg']}{shown}")
    if len(problems) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")
    return "\n".join(lines)


def load_config(path: Path | str, overrides: list[str] | None = None) -> HoneConfig:
    """Read YAML, apply dotted overrides, validate; every error is a HoneError naming file and field."""
    return load_file(HoneConfig, path, overrides)


def load_serve_config(path: Path | str, overrides: list[str] | None = None) -> ServeFile:
    """`hone serve`'s config: the base model, the server and the registry's store."""
    return load_file(ServeFile, path, overrides)


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_file(schema: type[ConfigT], path: Path | str, overrides: list[str] | None) -> ConfigT:
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise HoneError(format_validation_error(exc, str(path))) from None


def dump_config(config: HoneConfig) -> str:
    """The resolved config as YAML, every default spelled out, as written into each run folder."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
