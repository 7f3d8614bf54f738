from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

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
    found = [*REPO.glob("configs/**/*.yaml"), *REPO.glob("examples/**/*.yaml")]
    return sorted(path for path in found if "accelerate" not in path.parts)


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
