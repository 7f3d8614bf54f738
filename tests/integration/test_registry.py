"""The model registry end to end on a real MLflow SQLite store, with real tiny-model runs and ladders.

Two quickstart runs of the tiny model (`first`, `second`) are trained once for the module; each test
registers copies of them into a store of its own and promotes, refuses, forces and rolls back for real.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from hone.config import load_config
from hone.errors import HoneError
from hone.evaluate.ladder import prepare
from hone.io import file_digest
from hone.quickstart import run_quickstart
from hone.registry.bundle import base_weights_hash
from hone.registry.gate import GATE_LADDER_TAG, promote, rollback
from hone.registry.refs import Ref
from hone.registry.store import Registry, candidate_folders
from hone.runs import open_language_model_run

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "support-tickets"


def tiny_config(folder: Path, model: Path, name: str, seed: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"""model: {{reference: "{model}", max_length: 256}}
data:
  train: {folder / "train.jsonl"}
  validation: {folder / "validation.jsonl"}
  test: {folder / "test.jsonl"}
train:
  adapter: {{kind: lora, r: 4, alpha: 8}}
  learning_rate: 1.0e-2
  max_steps: 2
  batch_size: 4
  seed: {seed}
evaluate:
  json_schema: {EXAMPLE / "schema.json"}
  max_new_tokens: 8
  batch_size: 6
  rungs: [zero-shot]
  target: {{metric: exact_match, min: 0.0}}
  general: {{limit: 8, max_new_tokens: 4}}
run: {{name: {name}, dir: {folder / "runs"}}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A folder with two completed quickstart runs of the tiny model and their ladders."""
    folder = tmp_path_factory.mktemp("registry-project")
    for split, size in {"train": 16, "validation": 4, "test": 6}.items():
        lines = (EXAMPLE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:size]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONE_TRACKING_URI", f"sqlite:///{folder / 'tracking.db'}")
        patch.setenv("HF_HUB_OFFLINE", "1")
        for seed, name in enumerate(("first", "second"), start=1):
            run_quickstart(load_config(tiny_config(folder, tiny_model_dir, name, seed)), Console(quiet=True))
    return folder


@pytest.fixture
def runs(project: Path, tmp_path: Path) -> Path:
    """A copy of the project's runs, so a test may delete or change them."""
    shutil.copytree(project / "runs", tmp_path / "runs")
    return tmp_path / "runs"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    (tmp_path / "registry").mkdir()
    monkeypatch.setenv("HONE_TRACKING_URI", uri)
    return Registry(uri)


@pytest.fixture
def hone(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """The `hone` command in this process (its real entry point and exit codes), as a finished process."""
    from hone.cli import main

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "argv", ["hone", *args])
        monkeypatch.setenv("COLUMNS", "200")
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def test_add_keeps_a_hashed_copy_with_its_lineage_that_outlives_the_run(
    registry: Registry, runs: Path, tiny_model_dir: Path
) -> None:
    version = registry.add(runs / "first", "support")
    assert version.ref == "support/1"
    tags = version.tags
    manifest = open_language_model_run(runs / "first", "are read").manifest
    assert tags["hone.base_model"] == str(tiny_model_dir)
    assert tags["hone.base_model_sha256"] == base_weights_hash(tiny_model_dir)
    assert len(tags["hone.chat_template_sha256"]) == 64
    assert tags["hone.dataset_hash"] == manifest.dataset.hash
    assert json.loads(tags["hone.adapter_settings"])["r"] == 4 and tags["hone.lora_rank"] == "4"
    assert "learning_rate: 0.01" in tags["hone.config"]
    assert json.loads(tags["hone.training"])["steps"] == 2
    assert tags["hone.code_version"].startswith(manifest.code_version.hone)
    assert tags["hone.registered_by"] == getpass.getuser()
    assert tags["hone.system_prompt"].startswith("You triage support tickets"), "from the training data"
    (evaluation,) = json.loads(tags["hone.evaluations"])
    assert evaluation["evaluation"] == "first-ladder" and evaluation["primary_metric"] == "exact_match"
    assert evaluation["test_examples"] == 6 and "value" in evaluation

    folder = registry.folder(version)
    files = json.loads(tags["hone.files"])
    assert files["adapter/adapter_model.safetensors"] == file_digest(
        runs / "first" / "adapter" / "adapter_model.safetensors"
    )
    assert {"manifest.json", "config.yaml", "evaluations/first-ladder/ladder.json"} <= set(files)
    assert "evaluations/first-ladder/eval/first.jsonl" in files
    shutil.rmtree(runs)  # the registry holds its own copy
    assert registry.folder(registry.version(Ref("support", 1))) == folder
    assert open_language_model_run(folder, "are read").weights == folder / "adapter"


def test_first_promotion_reads_the_registered_ladder_and_the_target_decides(
    registry: Registry, runs: Path
) -> None:
    version = registry.add(runs / "first", "support")
    before = set((runs).iterdir())
    outcome = promote(registry, Ref("support", version.version), "production", Console(quiet=True))
    assert outcome.moved and outcome.passed and outcome.holder is None
    assert [rule.name for rule in outcome.rules] == ["target", "holder", "general", "servable"]
    assert outcome.ladder == "support/1 evaluations/first-ladder"
    assert set(runs.iterdir()) == before, "no new ladder was run: the registered one held the candidate"
    assert registry.holder("support", "production").version == 1
    (record,) = registry.history("support")
    assert (record.action, record.alias, record.from_version, record.to_version) == (
        "promote",
        "production",
        None,
        1,
    )
    assert record.user == getpass.getuser()
    target = next(rule for rule in record.gate if rule["rule"] == "target")
    assert target["metric"] == "exact_match" and target["min"] == 0.0 and target["passed"]


def test_gate_runs_a_ladder_of_both_versions_reuses_it_and_rollback_goes_back(
    registry: Registry, runs: Path
) -> None:
    console = Console(quiet=True)
    registry.add(runs / "first", "support")
    assert promote(registry, Ref("support", 1), "production", console).moved
    registry.add(runs / "second", "support")

    outcome = promote(registry, Ref("support", 2), "production", console)
    assert outcome.moved, [rule.detail for rule in outcome.rules]
    gate_run = Path(outcome.ladder)  # a new evaluation run in the config's run.dir
    assert gate_run.name.startswith("gate-support-v2-vs-v1-")
    ladder = json.loads((gate_run / "ladder.json").read_text())
    assert {rung["name"] for rung in ladder["rungs"]} == {"support-v1", "support-v2"}
    holder_rule = next(rule for rule in outcome.rules if rule.name == "holder")
    assert {"delta", "low", "high", "p_value"} <= set(holder_rule.numbers)
    assert registry.version(Ref("support", 2)).tags[f"{GATE_LADDER_TAG}1"]

    record = rollback(registry, "support", "production", reason="latency regression")
    assert (record.from_version, record.to_version) == (2, 1)
    assert registry.holder("support", "production").version == 1
    with pytest.raises(HoneError, match="no earlier holder"):
        rollback(registry, "support", "production")

    again = promote(registry, Ref("support", 2), "production", console)  # the gate's ladder is reused
    assert again.moved and again.ladder.startswith("MLflow run ")
    assert len(list(gate_run.parent.glob("gate-support-v2-vs-v1-*"))) == 1, "no second gate ladder"
    actions = [(r.action, r.from_version, r.to_version) for r in registry.history("support")]
    assert actions == [("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1), ("promote", 1, 2)]

    folders, names = candidate_folders(["support@production", "support/1"])
    inputs = prepare(load_config(runs / "first" / "config.yaml"), folders, names)
    assert [run.name for run in inputs.candidates] == ["support-v2", "support-v1"]


def test_target_and_servable_rules_refuse_with_their_numbers(registry: Registry, runs: Path) -> None:
    registry.add(runs / "first", "support")
    console = Console(quiet=True)
    cases = {
        "target": ["evaluate.target.min=1.0"],
        "servable": ["serve.max_lora_rank=2"],
    }
    for rule_name, overrides in cases.items():
        config = runs / "first" / "config.yaml"
        outcome = promote(registry, Ref("support", 1), "production", console, config, overrides)
        assert not outcome.moved
        failed = [rule for rule in outcome.rules if not rule.passed]
        assert [rule.name for rule in failed] == [rule_name]
    assert registry.holder("support", "production") is None
    records = registry.history("support")
    assert [record.action for record in records] == ["refuse", "refuse"]
    target = next(rule for rule in records[0].gate if rule["rule"] == "target")
    assert target["min"] == 1.0 and target["value"] < 1.0
    servable = next(rule for rule in records[1].gate if rule["rule"] == "servable")
    assert servable["lora_rank"] == "4" and servable["max_lora_rank"] == 2
    other_base = promote(
        registry,
        Ref("support", 1),
        "production",
        console,
        runs / "first" / "config.yaml",
        ["serve.base_model=x"],
    )
    assert "is not the server's 'x'" in next(r.detail for r in other_base.rules if r.name == "servable")


def worse_ladder(runs: Path) -> Path:
    """An evaluation of both runs in which `first` (the holder) is far better than `second`."""
    source, folder = runs / "second-ladder", runs / "both-ladder"
    folder.mkdir()
    manifest = json.loads((source / "manifest.json").read_text())
    manifest.update(name="both-ladder", candidates=[str(runs / "first"), str(runs / "second")])
    manifest.pop("evaluates")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ladder = json.loads((source / "ladder.json").read_text())
    second = next(rung for rung in ladder["rungs"] if rung["name"] == "second")
    first = json.loads(json.dumps(second)) | {"name": "first"}
    first["general"]["probe_accuracy"], second["general"]["probe_accuracy"] = 0.9, 0.1
    ladder["rungs"].append(first)
    (folder / "ladder.json").write_text(json.dumps(ladder))
    (folder / "eval").mkdir()
    rows = [json.loads(line) for line in (source / "eval" / "second.jsonl").read_text().splitlines()]
    for name, score in (("first", 1.0), ("second", 0.0)):
        scored = [row | {"scores": row["scores"] | {"exact_match": score}} for row in rows]
        (folder / "eval" / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in scored))
    return folder


def test_a_worse_candidate_is_refused_by_the_cli_and_force_needs_a_reason(
    registry: Registry, runs: Path, hone
) -> None:
    registry.add(runs / "first", "support")
    assert promote(registry, Ref("support", 1), "production", Console(quiet=True)).moved
    worse_ladder(runs)
    registry.add(runs / "second", "support")
    uri = ["--uri", registry.uri]

    refused = hone("registry", "promote", "support/2", "--to", "production", *uri)
    assert refused.returncode == 1, refused.stderr
    assert "holder" in refused.stdout and "significantly worse" in refused.stdout
    assert "lost 0.800" in refused.stdout and "beyond the tolerance 0.05" in refused.stdout
    assert "refused" in refused.stderr
    assert registry.holder("support", "production").version == 1

    no_reason = hone("registry", "promote", "support/2", "--to", "production", "--force", *uri)
    assert no_reason.returncode == 2 and "--force needs --reason" in no_reason.stderr
    forced = hone(
        "registry", "promote", "support/2", "--to", "production", "--force", "--reason", "hotfix", *uri
    )
    assert forced.returncode == 0, forced.stderr
    assert registry.holder("support", "production").version == 2
    shown = hone("registry", "history", "support", "--json", *uri)
    records = json.loads(shown.stdout)
    assert [r["action"] for r in records] == ["promote", "refuse", "force"]
    assert records[2]["reason"] == "hotfix"
    holder = next(rule for rule in records[1]["gate"] if rule["rule"] == "holder")
    assert holder["delta"] == -1.0 and holder["high"] < 0


def test_a_tampered_truncated_or_missing_file_is_refused_by_name(registry: Registry, runs: Path) -> None:
    version = registry.add(runs / "first", "support")
    folder = registry.folder(version)
    weights = folder / "adapter" / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(HoneError, match=r"adapter/adapter_model.safetensors changed"):
        registry.folder(version)
    weights.write_bytes(original[: len(original) // 2])
    with pytest.raises(HoneError, match="do not match the registered content hash"):
        promote(registry, Ref("support", 1), "production", Console(quiet=True))
    weights.unlink()
    with pytest.raises(HoneError, match=r"adapter/adapter_model.safetensors is missing"):
        candidate_folders(["support/1"], registry.uri)
    weights.write_bytes(original)
    assert registry.folder(version) == folder
    assert registry.history("support") == [], "a refused load is not a promotion"


def test_bad_names_and_references_exit_2_and_write_nothing(registry: Registry, runs: Path, hone) -> None:
    uri = ["--uri", registry.uri]
    for bad in ("../x", "", "a/b", "-x"):
        result = hone("registry", "add", str(runs / "first"), "--name", bad, *uri)
        assert result.returncode == 2, (bad, result.stderr)
        assert "registry name" in result.stderr and "Traceback" not in result.stderr
    assert registry.names() == []
    assert registry.client.get_experiment_by_name("hone-registry") is None, "no MLflow run was started"

    registry.add(runs / "first", "support")
    for ref, message in (
        ("support@nope", "has no alias 'nope'"),
        ("support/7", "has no version 7 (newest: 1)"),
        ("ghost/1", "no model named 'ghost'"),
        ("support@@x", "expected NAME, NAME/VERSION or NAME@ALIAS"),
    ):
        result = hone("registry", "show", ref, *uri)
        assert result.returncode == 2 and message in result.stderr, (ref, result.stderr)
    unknown = hone("evaluate", "-c", str(runs / "first" / "config.yaml"), "--candidate", "support@nope", *uri)
    assert unknown.returncode == 2 and "has no alias 'nope'" in unknown.stderr
    assert not [path for path in runs.iterdir() if path.name.startswith("evaluate-")]
    assert len(registry.versions("support")) == 1


def test_parallel_adds_and_promotions_lose_nothing(runs: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"  # four processes create the store together
    command = [sys.executable, "-c", "from hone.cli import main; main()", "registry"]

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*command, *args, "--uri", uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    adds = [
        start("add", str(runs / run), "--name", "support") for run in ("first", "second", "first", "second")
    ]
    for process in adds:
        _, error = process.communicate(timeout=300)
        assert process.returncode == 0, error
    registry = Registry(uri)
    versions = registry.versions("support")
    assert sorted(v.version for v in versions) == [1, 2, 3, 4]
    for version in versions:
        registry.folder(version)
    promotions = [start("promote", f"support/{n}", "--to", f"canary-{n}") for n in (1, 2, 3)]
    for process in promotions:
        _, error = process.communicate(timeout=300)
        assert process.returncode == 0, error
    assert sorted(r.alias for r in registry.history("support")) == ["canary-1", "canary-2", "canary-3"]
    assert {n: registry.holder("support", f"canary-{n}").version for n in (1, 2, 3)} == {1: 1, 2: 2, 3: 3}


def test_kill_9_during_add_leaves_no_version_pointing_at_missing_files(
    registry: Registry, runs: Path
) -> None:
    registry.add(runs / "first", "support")
    artifacts = Path(registry.uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    command = [
        sys.executable,
        "-c",
        "from hone.cli import main; main()",
        "registry",
        "add",
        str(runs / "second"),
    ]
    command += ["--name", "support", "--uri", registry.uri]
    killed = 0
    for delay in (0.0, 0.05):
        before = set(artifacts.rglob("*"))
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if set(artifacts.rglob("*")) - before:  # the upload has begun
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                killed += 1
                break
            time.sleep(0.005)
        process.wait(timeout=60)
    assert killed, "the add was killed while it wrote"
    for version in registry.versions("support"):
        registry.folder(version)  # every version that exists has all its files
    after = registry.add(runs / "second", "support")
    assert registry.folder(after).is_dir()
    assert after.version == max(v.version for v in registry.versions("support"))


def test_list_show_and_lineage_both_ways(registry: Registry, runs: Path, hone) -> None:
    first = registry.add(runs / "first", "support")
    registry.add(runs / "second", "support")
    registry.add(runs / "second", "other")
    assert promote(registry, Ref("support", 1), "production", Console(quiet=True)).moved
    uri = ["--uri", registry.uri]
    dataset = first.tags["hone.dataset_hash"]

    listed = json.loads(hone("registry", "list", "support", "--json", *uri).stdout)
    assert [(v["version"], v["aliases"]) for v in listed] == [(2, []), (1, ["production"])]
    table = hone("registry", "list", *uri).stdout
    assert "support" in table and "production -> 1" in table and "other" in table
    shown = json.loads(hone("registry", "show", "support@production", "--json", *uri).stdout)
    assert shown["version"] == 1 and shown["lineage"]["run_name"] == "first"
    assert shown["lineage"]["training"]["steps"] == 2 and shown["lineage"]["config"]["train"]["seed"] == 1

    back = hone("registry", "lineage", "support/1", *uri)
    assert back.returncode == 0, back.stderr
    assert f"dataset    {dataset}" in back.stdout and "train: " in back.stdout
    assert "base model " in back.stdout and first.tags["hone.base_model_sha256"][:16] in back.stdout
    assert "evaluated  first-ladder" in back.stdout
    forward = json.loads(hone("registry", "lineage", f"dataset:{dataset[:12]}", "--json", *uri).stdout)
    assert forward["version"] is None
    assert sorted(forward["trained_on_dataset"]) == ["other/1", "support/1", "support/2"]
    unknown = hone("registry", "lineage", "dataset:0000000000", "--json", *uri)
    assert json.loads(unknown.stdout)["trained_on_dataset"] == []
    assert hone("registry", "lineage", "dataset:xyz", *uri).returncode == 2


def test_a_config_names_registered_versions_as_candidates(registry: Registry, runs: Path, hone) -> None:
    import yaml

    registry.add(runs / "first", "support")
    raw = yaml.safe_load((runs / "first" / "config.yaml").read_text())
    raw["evaluate"]["candidates"] = ["support/1"]
    config = runs / "with-version.yaml"
    config.write_text(yaml.safe_dump(raw))
    checked = hone("config", "validate", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "support/1 is a registered version, checked when loaded" in checked.stdout
    raw["evaluate"]["candidates"] = ["support@nope"]
    config.write_text(yaml.safe_dump(raw))
    failed = hone("evaluate", "-c", str(config), "--uri", registry.uri)
    assert failed.returncode == 2 and "has no alias 'nope'" in failed.stderr


def test_export_reads_a_registered_version_and_leaves_its_files_alone(
    registry: Registry, runs: Path, hone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = registry.add(runs / "first", "support")
    assert promote(registry, Ref("support", 1), "production", Console(quiet=True)).moved
    folder = registry.folder(version)
    manifest = (folder / "manifest.json").read_bytes()
    monkeypatch.chdir(tmp_path)

    exported = hone("export", "support@production", "--merge", "--uri", registry.uri)

    assert exported.returncode == 0, exported.stderr
    merged = tmp_path / "exports" / "support-v1" / "merged"
    assert json.loads((merged / "export.json").read_text())["kind"] == "merged"
    assert (folder / "manifest.json").read_bytes() == manifest, "the version's manifest is not written"
    assert registry.folder(registry.version(Ref("support", 1))) == folder, "its content hash still holds"
    assert hone("export", "support/9", "--merge", "--uri", registry.uri).returncode == 2
