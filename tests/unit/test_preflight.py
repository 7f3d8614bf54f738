"""hone.preflight: everything a config names is there, checked without loading, converting or downloading."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from hone.config import DataFormat, HoneConfig, load_config
from hone.data.formats import FORMATS
from hone.errors import HoneError
from hone.preflight import check_config
from hone.runs import RunFolder

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    path
    for path in [*REPO.glob("configs/**/*.yaml"), *REPO.glob("examples/**/*.yaml")]
    if "accelerate" not in path.parts and not path.name.startswith("serve")  # other kinds of config
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_names_only_what_is_there(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the README runs them from the repository's root
    assert check_config(load_config(path), str(path)) == []


def test_the_config_knows_every_data_format_and_no_other() -> None:
    assert set(typing.get_args(DataFormat)) == {"auto", *FORMATS}


def finished(tmp_path: Path, model: Path, name: str, method: str = "sft", status: str = "completed") -> Path:
    """A training run folder as training leaves it, with the tiny model's own files as its weights."""
    config = HoneConfig.model_validate(
        {
            "data": {"train": "t.jsonl"},
            "train": {"method": method},
            "run": {"name": name, "dir": str(tmp_path)},
        }
    )
    run = RunFolder.create(config)
    weights = run.path / "model"
    weights.mkdir()
    for file in model.iterdir():
        (weights / file.name).write_bytes(file.read_bytes())
    run.update(artifacts={"weights": "model"})
    run.finish(status)  # type: ignore[arg-type]
    return run.path


def test_candidates_judges_and_reward_runs_are_opened_and_their_weights_checked(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    good = finished(tmp_path, tiny_model_dir, "good")
    failed = finished(tmp_path, tiny_model_dir, "failed", status="failed")
    truncated = finished(tmp_path, tiny_model_dir, "truncated")
    weights = truncated / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    scorer = finished(tmp_path, tiny_model_dir, "scorer", method="reward")
    raw = {
        "model": {"reference": str(tiny_model_dir)},
        "data": {"train": str(tmp_path / "good" / "config.yaml")},
        "evaluate": {"candidates": [str(good), str(failed), str(truncated)], "judge": {"model": str(scorer)}},
        "train": {"rl": {"reward": str(good)}},
    }

    with pytest.raises(HoneError) as refused:
        check_config(HoneConfig.model_validate(raw), "c.yaml")

    lines = str(refused.value).splitlines()
    assert lines[0] == "c.yaml: the config names what is not there"
    assert len(lines) == 5, lines
    assert (
        lines[1]
        == f"  evaluate.candidates[1]: {failed}: run status is 'failed'; only a completed run can be used"
    )
    assert (
        lines[2].startswith(f"  evaluate.candidates[2]: {weights}: ") and "truncated or corrupt" in lines[2]
    )
    methods = "sft or pretrain or dpo or rl"
    assert lines[3] == f"  evaluate.judge.model: {scorer}: a reward run; expected a run of method {methods}"
    assert lines[4] == f"  train.rl.reward: {good}: a sft run; expected a run of method reward"
    raw["evaluate"] = {"candidates": [str(good)], "judge": {"model": str(good)}}
    raw["train"] = {"rl": {"reward": str(scorer)}}
    assert check_config(HoneConfig.model_validate(raw), "c.yaml") == []


def test_a_hub_id_not_in_the_cache_is_a_note_not_an_error(tmp_path: Path) -> None:
    config = HoneConfig.model_validate(
        {"model": {"reference": "nobody-here/no-such-model"}, "data": {"train": str(tmp_path)}}
    )
    assert check_config(config, "c.yaml") == [
        "model.reference: 'nobody-here/no-such-model' is not a local folder nor in the local hub cache; "
        "it is downloaded on first use"
    ]
