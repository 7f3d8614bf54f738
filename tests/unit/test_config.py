from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import annotated_types
import pytest
from pydantic import BaseModel

from hone.config import HoneConfig, apply_overrides, dump_config, load_config
from hone.errors import HoneError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "data: {train: t.jsonl}\n"))
    assert config.model.reference == "smollm2-135m-instruct"
    assert config.train.adapter.kind == "lora"
    assert config.train.resolved_learning_rate() == 2e-4
    assert (
        load_config(
            write(tmp_path, "data: {train: t.jsonl}\ntrain: {adapter: full}\n")
        ).train.resolved_learning_rate()
        == 2e-5
    )


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {train: t.jsonl}\n")
    config = load_config(path, ["train.learning_rate=1e-4", "train.adapter.r=8", "evaluate.limit=3"])
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.train.adapter.r == 8
    assert config.evaluate.limit == 3


def test_adapter_shorthand_then_field_override(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {train: t.jsonl}\ntrain: {adapter: qlora}\n")
    config = load_config(path, ["train.adapter.alpha=64"])
    assert config.train.adapter.kind == "qlora"
    assert config.train.adapter.alpha == 64


def test_errors_name_the_full_path_of_every_bad_field(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {train: t.jsonl}\ntrain: {adapter: {kind: lora, rank: 4}}\n")
    with pytest.raises(HoneError) as caught:
        load_config(path, ["train.learning_rate=fast"])
    message = str(caught.value)
    assert str(path) in message
    assert "train.adapter.rank: Extra inputs are not permitted" in message
    assert "train.learning_rate" in message and "'fast'" in message


def test_unknown_section_and_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(HoneError) as caught:
        load_config(write(tmp_path, "trian: {}\n"))
    assert "trian: Extra inputs are not permitted" in str(caught.value)
    assert "data: Field required" in str(caught.value)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match=r"line 2: not valid YAML"):
        load_config(write(tmp_path, "data:\n\ttrain: t.jsonl\n"))


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(HoneError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(HoneError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_anchors_and_aliases_still_load(tmp_path: Path) -> None:
    text = (
        "data: {train: &train data/t.jsonl, validation: *train}\n"
        "run: {dir: &runs out}\n"
        "model: {reference: *runs}\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.data.validation == config.data.train == Path("data/t.jsonl")
    assert config.model.reference == "out"


def test_alias_expansion_and_file_size_are_bounded(tmp_path: Path) -> None:
    import yaml

    from hone.config_text import MAX_CONFIG_BYTES, MAX_CONFIG_VALUES, expanded_size

    wide = "a: &a [" + ", ".join(["x"] * 99) + "]\nb: [" + ", ".join(["*a"] * 99) + "]\n"
    root, keys, a, b = 1, 2, 1 + 99, 1 + 99 * 100  # `a` is shared, but counted at every alias
    assert expanded_size(yaml.compose(wide), "w") == root + keys + a + b
    levels = "\n".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 20) + "]" for i in range(1, 5))
    with pytest.raises(HoneError, match=f"more than {MAX_CONFIG_VALUES:,} values"):
        load_config(write(tmp_path, "l0: &l0 x\n" + levels + "\n"))
    with pytest.raises(HoneError, match=f"at most {MAX_CONFIG_BYTES:,} bytes"):
        load_config(write(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\n"))


def test_override_syntax_errors() -> None:
    with pytest.raises(HoneError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.learning_rate"])
    with pytest.raises(HoneError, match=r"data\.train is not a section"):
        apply_overrides({"data": {"train": "x"}}, ["data.train.path=y"])


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "data: {train: t.jsonl}\n"), ["train.max_steps=7"])
    again = load_config(write(tmp_path, dump_config(config)))
    assert again == config


def shipped_configs() -> list[Path]:
    """Every shipped config of the lifecycle (the server's configs and accelerate's are of other kinds)."""
    found = [*REPO.glob("configs/**/*.yaml"), *REPO.glob("examples/**/*.yaml")]
    return sorted(path for path in found if "accelerate" not in path.parts and path not in serve_configs())


def serve_configs() -> list[Path]:
    return sorted(REPO.glob("configs/serve*.yaml"))


@pytest.mark.parametrize("path", serve_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_serve_config_validates(path: Path) -> None:
    from hone.config import ServeFile, load_serve_config

    config = load_serve_config(path)
    assert isinstance(config, ServeFile) and config.serve.host == "127.0.0.1"
    assert path.read_text(encoding="utf-8").startswith("# hone serve -c "), "its header is the command"


def test_there_are_shipped_configs() -> None:
    assert any(path.name == "quickstart.yaml" for path in shipped_configs())


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, HoneConfig)
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# hone "), "a shipped config's header comment is the command that runs it"
    for split in (config.data.train, config.data.validation, config.data.test):
        if split is not None:
            assert (REPO / split).exists(), f"{path}: data {split} does not exist"


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/accelerate/*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_launch_hone_train(path: Path) -> None:
    import yaml

    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"# accelerate launch --config_file configs/accelerate/{path.name} -m hone train")
    settings = yaml.safe_load(text)
    assert settings["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
    assert settings["mixed_precision"] == "no", "hone chooses the precision; accelerate must not override it"


def test_robust_dpo_needs_label_smoothing(tmp_path: Path) -> None:
    text = "data: {train: t.jsonl}\ntrain: {method: dpo, dpo: {loss_type: robust}}\n"
    with pytest.raises(HoneError, match=r"train\.dpo: Value error, loss_type robust needs label_smoothing"):
        load_config(write(tmp_path, text))
    text = text.replace("robust}", "robust, label_smoothing: 0.1}")
    assert load_config(write(tmp_path, text)).train.dpo.label_smoothing == 0.1


def every_description(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, description) of every field of a config section and of the sections inside it."""
    for name, field in model.model_fields.items():
        yield f"{path}{name}", field.description or ""
        for inner in typing.get_args(field.annotation) or (field.annotation,):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from every_description(inner, f"{path}{name}.")


def test_descriptions_carry_no_measured_figures() -> None:
    """Speed-ups and measured rates live in benchmarks/RESULTS.md, where they are dated and re-measured; a
    description says what a setting does and points there."""
    figure = re.compile(r"\d(\.\d+)?x\b|\d+(\.\d+)? ?(s/step|tokens/s|ms\b)|\bmeasured\b", re.IGNORECASE)
    described = dict(every_description(HoneConfig))
    assert len(described) > 50 and "train.cpu_kernels" in described
    stale = {path: text for path, text in described.items() if figure.search(text)}
    assert not stale, stale


def test_validate_refuses_non_finite_and_absurd_numbers() -> None:
    """Each of these once validated and started a run that trained on garbage or never ended."""
    bad = [
        "train.learning_rate=.inf",
        "evaluate.target.metric=exact_match",
        "evaluate.target.min=.nan",
        "train.batch_size=1000000000000",
        "model.max_length=1.0e+12",
        "train.epochs=1e308",
        "train.adapter.r=10000000",
        "evaluate.batch_size=1000000",
        "evaluate.max_new_tokens=1000000000",
        "train.seed=-1",
    ]
    command = [sys.executable, "-c", "from hone.cli import main; main()", "config", "validate"]
    command += ["configs/quickstart.yaml", *bad]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "configs/quickstart.yaml: invalid config" in done.stderr
    for line in (
        "train.learning_rate: Input should be a finite number (got inf)",
        "evaluate.target.min: Input should be a finite number (got nan)",
        "train.batch_size: Input should be less than or equal to 65536",
        "model.max_length: Input should be less than or equal to 1048576",
        "train.epochs: Input should be less than or equal to 1000",
        "train.adapter.r: Input should be less than or equal to 65536",
        "evaluate.batch_size: Input should be less than or equal to 65536",
        "evaluate.max_new_tokens: Input should be less than or equal to 1048576",
        "train.seed: Input should be greater than or equal to 0",
    ):
        assert line in done.stderr, done.stderr


def numeric_fields(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, type, list[object], type]]:
    """(field path, int or float, constraints, section) of every number in a config section and below."""
    for name, field in model.model_fields.items():
        for inner in typing.get_args(field.annotation) or (field.annotation,):
            if inner in (int, float):
                yield f"{path}{name}", inner, field.metadata, model
            elif isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from numeric_fields(inner, f"{path}{name}.")


def test_every_count_has_a_ceiling_and_no_number_is_infinite() -> None:
    """The class of the bug, not its examples: a new count without an upper bound, or a new section
    that lets NaN or infinity through, fails here."""
    found = list(numeric_fields(HoneConfig))
    paths = {path for path, *_ in found}
    assert {"train.batch_size", "train.adapter.r", "model.max_length", "train.learning_rate"} <= paths
    unbounded = [
        path
        for path, kind, constraints, _ in found
        if kind is int
        and not any(isinstance(c, (annotated_types.Le, annotated_types.Lt)) for c in constraints)
    ]
    assert not unbounded, f"int fields without an upper bound: {unbounded}"
    lenient = {section.__name__ for *_, section in found if section.model_config.get("allow_inf_nan", True)}
    assert not lenient, f"sections that accept NaN and infinity: {lenient}"
