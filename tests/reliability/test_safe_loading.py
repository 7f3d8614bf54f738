"""Safe loading through the real `hone` command: pickle weights and a model's own Python code are refused
unless the config opts in (model.allow_pickle, model.trust_remote_code), an export is read back only when
its files still match the sha256 that `hone export` recorded, and no torch.load in hone unpickles code.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from completed_runs import lora_run
from hone.cli import main
from hone.errors import HoneError
from hone.export import gguf, parity
from hone.export.merge import EXPORT_RECORD

SRC = Path(__file__).resolve().parents[2] / "src" / "hone"


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Exit code and stderr of `hone ARGS`, run through the real entry point."""
    monkeypatch.setattr(sys, "argv", ["hone", *args])
    monkeypatch.setenv("COLUMNS", "400")  # one error per line, whatever its length
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    return int(exited.value.code or 0), capsys.readouterr().err


def refused(code: int, stderr: str, *expected: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    message = " ".join(stderr.split())
    for text in expected:
        assert text in message, message


def config_file(root: Path, model: Path, task: dict[str, Path]) -> Path:
    """One config for both commands: a step of LoRA training, or a zero-shot ladder on two examples."""
    path = root / "hone.yaml"
    path.write_text(
        f"model: {{reference: {model}, max_length: 512}}\n"
        f"data: {{train: {task['train']}, test: {task['test']}}}\n"
        "train: {adapter: {kind: lora, r: 4, alpha: 8}, max_steps: 1, batch_size: 2}\n"
        "evaluate: {rungs: [zero-shot], limit: 2, max_new_tokens: 4, batch_size: 2}\n"
        f"run: {{dir: {root / 'runs'}}}\n",
        encoding="utf-8",
    )
    return path


def model_copy(source: Path, target: Path) -> Path:
    """The model folder's config and tokenizer files, without its weights."""
    target.mkdir()
    for file in source.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, target / file.name)
    return target


@pytest.fixture(scope="module")
def pickle_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model as `save_pretrained(safe_serialization=False)` wrote it: pytorch_model.bin, a pickle."""
    from safetensors.torch import load_file

    folder = model_copy(tiny_model_dir, tmp_path_factory.mktemp("pickled") / "model")
    torch.save(load_file(tiny_model_dir / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_pickle_weights_are_refused_unless_the_config_allows_them(
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pickle_model_dir: Path,
    small_task: dict[str, Path],
) -> None:
    config = config_file(tmp_path, pickle_model_dir, small_task)

    code, stderr = run_cli(monkeypatch, capsys, command, "-c", str(config))
    refused(
        code,
        stderr,
        f"{pickle_model_dir}: holds pickle weights only (pytorch_model.bin)",
        "loading a pickle can run any code it carries",
        "set model.allow_pickle: true",
    )
    assert not (tmp_path / "runs").exists(), "refused before a run folder was made"

    code, stderr = run_cli(monkeypatch, capsys, command, "-c", str(config), "model.allow_pickle=true")
    assert code == 0, stderr
    (run,) = (tmp_path / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    if command == "train":
        assert manifest["base_model"]["path"] == str(pickle_model_dir)


def test_a_model_that_names_its_own_code_is_refused_and_the_code_never_runs(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tiny_model_dir: Path,
    small_task: dict[str, Path],
) -> None:
    folder = model_copy(tiny_model_dir, tmp_path / "custom")
    shutil.copy(tiny_model_dir / "model.safetensors", folder)
    marker = tmp_path / "the-code-ran"
    (folder / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    settings = json.loads((folder / "config.json").read_text())
    settings["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(settings))
    config = config_file(tmp_path, folder, small_task)

    for command in (("train", "-c"), ("evaluate", "-c"), ("config", "validate")):
        code, stderr = run_cli(monkeypatch, capsys, *command, str(config))
        refused(
            code,
            stderr,
            f"{folder / 'config.json'}: its auto_map names Python code of the model's own",
            "set model.trust_remote_code: true",
        )
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def f16_export(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> gguf.GGUFExport:
    """A real f16 export; in the session-wide HONE_HOME, where llama.cpp's converters are fetched once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONE_HOME", str(tmp_path_factory.getbasetemp() / "hone-home"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        return gguf.to_gguf(lora_run(tmp_path_factory.mktemp("export"), tiny_model_dir), quant="f16")


def test_export_records_the_sha256_of_every_file_it_wrote(f16_export: gguf.GGUFExport) -> None:
    from hone.io import file_digest

    for folder, weights in (
        (f16_export.merged, "model.safetensors"),
        (f16_export.folder, f16_export.model.name),
    ):
        recorded = json.loads((folder / EXPORT_RECORD).read_text())["sha256"]
        written = {file.name for file in folder.iterdir() if file.name != EXPORT_RECORD}
        assert weights in written and set(recorded) == written
        assert all(recorded[name] == file_digest(folder / name) for name in written)


def flip_a_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-100] ^= 0xFF  # inside the last tensor's data: same size, same header
    file.write_bytes(bytes(data))


def add_auto_map(file: Path) -> None:
    settings = json.loads(file.read_text())
    file.write_text(json.dumps({**settings, "auto_map": {"AutoModelForCausalLM": "evil.Model"}}))


def test_a_changed_export_file_is_refused_when_parity_reads_it(f16_export: gguf.GGUFExport) -> None:
    tampered = [
        (f16_export.merged / "model.safetensors", flip_a_byte),
        (f16_export.merged / "config.json", add_auto_map),
        (f16_export.model, flip_a_byte),
    ]
    for file, tamper in tampered:
        original = file.read_bytes()
        tamper(file)
        with pytest.raises(HoneError) as raised:
            parity.parity_check(f16_export, max_new_tokens=2)
        assert str(raised.value).startswith(f"{file}: changed since hone export wrote it")
        file.write_bytes(original)
    result = parity.parity_check(f16_export, max_new_tokens=2)
    assert len(result.prompts) == 3, "the untouched export is read and compared"


def unsafe_loads(source: str) -> list[int]:
    """Lines that unpickle without torch's weights_only guard: torch.load without weights_only=True, a
    bare `load` imported from torch, pickle.load(s)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle"):
            lines += [node.lineno for alias in node.names if alias.name in ("load", "loads")]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        if owner == "torch" and node.func.attr == "load":
            guards = [k.value for k in node.keywords if k.arg == "weights_only"]
            if not (guards and isinstance(guards[0], ast.Constant) and guards[0].value is True):
                lines.append(node.lineno)
        elif owner == "pickle" and node.func.attr in ("load", "loads"):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_unsafe_load_finder_finds_each_kind() -> None:
    source = (
        "torch.load(f, weights_only=True)\n"
        "torch.load(f)\n"
        "torch.load(f, weights_only=False)\n"
        "pickle.loads(b)\n"
        "from torch import load\n"
    )
    assert unsafe_loads(source) == [2, 3, 4, 5]


def test_every_torch_load_in_hone_passes_weights_only() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50
    found = {str(file.relative_to(SRC)): lines for file in files if (lines := unsafe_loads(file.read_text()))}
    assert not found, f"unpickling without weights_only=True: {found}"
