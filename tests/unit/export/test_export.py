"""`hone export` on the tiny model: real merges, llama.cpp's real converters, a real parity check.

Run folders are made by hand (a PEFT adapter with perturbed weights saved where training saves it), so
no test pays for training. The converters are fetched once per session into the shared HONE_HOME.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from hone.cli import main
from hone.config import HoneConfig
from hone.errors import HoneError
from hone.export import gguf, llama_cpp, ollama, parity
from hone.export import merge as merging
from hone.models.quantization import quantization_config
from hone.models.resolve import load_model, load_tokenizer
from hone.models.templates import PROBE_CHATS
from hone.runs import RunFolder, open_language_model_run
from hone.train.setup import lora_config

PROMPT = "<|im_start|>user\nWhere is my refund?<|im_end|>\n<|im_start|>assistant\n"
LLAMA3_TEMPLATE = (
    "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>{% endfor %}"
)


def make_run(root: Path, base: Path, kind: str, data: dict[str, Any] | None = None, **adapter: Any) -> Path:
    """A completed run folder as training leaves it, with weights moved away from their initial values."""
    config = HoneConfig.model_validate(
        {
            "model": {"reference": str(base)},
            "data": data or {"train": "train.jsonl", "system_prompt": "Reply in JSON."},
            "train": {
                "adapter": {"kind": kind, **({} if kind == "full" else {"r": 4, "alpha": 8}), **adapter}
            },
            "run": {"name": kind, "dir": str(root)},
        }
    )
    run = RunFolder.create(config)
    torch.manual_seed(3)
    if kind == "full":
        model = load_model(base)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
        weights = "model"
    else:
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        quantized = {"quantization_config": quantization_config(torch.float32), "device_map": "cpu"}
        base_model = AutoModelForCausalLM.from_pretrained(
            base, dtype=torch.float32, **(quantized if kind == "qlora" else {})
        )
        model = get_peft_model(base_model, lora_config(config.train.adapter, "CAUSAL_LM"))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, 0.05)
        weights = "adapter"
    model.save_pretrained(run.path / weights)
    load_tokenizer(base).save_pretrained(run.path / weights)
    run.update(base_model={"path": str(base)}, artifacts={"weights": weights})
    run.finish("completed")
    return run.path


def logits(model: Any, tokenizer: Any) -> torch.Tensor:
    batch = tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**batch).logits


def test_merged_lora_has_the_peft_models_logits(tmp_path: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel

    run = make_run(tmp_path, tiny_model_dir, "lora")
    merged = merging.merge(run)

    assert merged == run / "export" / "merged"
    tokenizer = load_tokenizer(merged)
    peft = PeftModel.from_pretrained(load_model(tiny_model_dir), run / "adapter").eval()
    expected = logits(peft, tokenizer)
    assert not torch.allclose(expected, logits(load_model(tiny_model_dir), tokenizer), atol=1e-3)
    assert torch.allclose(logits(load_model(merged), tokenizer), expected, atol=1e-5)
    assert tokenizer.chat_template == load_tokenizer(tiny_model_dir).chat_template
    record = json.loads((merged / "export.json").read_text())
    assert record["kind"] == "merged" and record["adapter"] == "lora" and not record["dequantized"]
    assert record["code_version"]["hone"]
    assert RunFolder.open(run).manifest.artifacts["export_merged"] == "export/merged"
    assert not [p.name for p in merged.parent.iterdir() if p.name.startswith(".")], "no staging left"


def test_full_fine_tuning_exports_its_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    run = make_run(tmp_path, tiny_model_dir, "full")
    merged = merging.merge(run, out=tmp_path / "elsewhere")

    tokenizer = load_tokenizer(merged)
    assert torch.equal(logits(load_model(merged), tokenizer), logits(load_model(run / "model"), tokenizer))
    assert RunFolder.open(run).manifest.artifacts["export_merged"] == str((tmp_path / "elsewhere").resolve())


def test_qlora_merge_is_refused_with_the_reason(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path, tiny_model_dir, "qlora")
    monkeypatch.setattr(sys, "argv", ["hone", "export", str(run), "--merge"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    message = " ".join(stderr.split())
    assert "error:" in message and "NF4-rounded base weights" in message
    assert "re-rounds every merged weight" in message and "--dequantize" in message
    assert not (run / "export").exists(), "nothing is written when the merge is refused"


def test_qlora_dequantized_merge_is_the_model_that_was_trained(tmp_path: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = make_run(tmp_path, tiny_model_dir, "qlora")
    merged = merging.merge(run, dequantize=True)

    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config
    tokenizer = load_tokenizer(merged)
    four_bit = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, quantization_config=quantization_config(torch.float32)
    )
    trained = logits(PeftModel.from_pretrained(four_bit, run / "adapter").eval(), tokenizer)
    into_fp32_base = logits(PeftModel.from_pretrained(load_model(tiny_model_dir), run / "adapter"), tokenizer)
    dequantized_error = float((logits(load_model(merged), tokenizer) - trained).abs().max())
    fp32_base_error = float((into_fp32_base - trained).abs().max())
    # bitsandbytes' CPU 4-bit matmul rounds a little on its own; the fp32 base is off by far more.
    assert dequantized_error < 0.01 and dequantized_error < fp32_base_error / 5, (
        dequantized_error,
        fp32_base_error,
    )
    assert json.loads((merged / "export.json").read_text())["dequantized"] is True


def test_modelfile_has_the_chat_template_stop_token_and_system_prompt(tokenizer: Any) -> None:
    text = ollama.modelfile("tuned-q8_0.gguf", tokenizer, "Reply in JSON.")

    assert text.startswith("FROM ./tuned-q8_0.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert 'SYSTEM """Reply in JSON."""' in text
    assert '{{ "You are a helpful AI assistant named SmolLM, trained by Hugging Face" }}' in text
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}" in text
    assert "<|im_start|>assistant\n{{ end }}" in text
    assert ollama.chatml_default_system(tokenizer) == (
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )


def test_modelfile_refuses_a_template_it_cannot_translate(tiny_model_dir: Path) -> None:
    other = AutoTokenizer.from_pretrained(tiny_model_dir)
    other.chat_template = LLAMA3_TEMPLATE

    with pytest.raises(HoneError, match="not ChatML"):
        ollama.modelfile("m.gguf", other)


GO_RENDER = """package main

import ("encoding/json"; "os"; "strings"; "text/template")

type Message struct { Role string `json:"role"`; Content string `json:"content"` }

func main() {
	source, _ := os.ReadFile(os.Args[1])
	var chats [][]Message
	data, _ := os.ReadFile(os.Args[2])
	json.Unmarshal(data, &chats)
	parsed := template.Must(template.New("t").Parse(string(source)))
	rendered := []string{}
	for _, chat := range chats {
		var text strings.Builder
		if err := parsed.Execute(&text, map[string]any{"Messages": chat}); err != nil { panic(err) }
		rendered = append(rendered, text.String())
	}
	out, _ := json.Marshal(rendered)
	os.Stdout.Write(out)
}
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to run Ollama's template language")
def test_ollama_template_renders_exactly_like_the_chat_template(tokenizer: Any, tmp_path: Path) -> None:
    text = ollama.modelfile("m.gguf", tokenizer)
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    chats = [*PROBE_CHATS, [{"role": "user", "content": 'quote " and {{ braces }}'}]]
    (tmp_path / "render.go").write_text(GO_RENDER)
    (tmp_path / "template.txt").write_text(template)
    (tmp_path / "chats.json").write_text(json.dumps(chats))
    command = ["go", "run", "render.go", "template.txt", "chats.json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)

    for chat, rendered in zip(chats, json.loads(done.stdout), strict=True):
        if chat[-1]["role"] == "assistant":  # Ollama continues a final assistant message
            expected = tokenizer.apply_chat_template(chat, tokenize=False).removesuffix("<|im_end|>\n")
        else:
            expected = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert rendered == expected


@pytest.fixture(scope="module")
def f16_export(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> gguf.GGUFExport:
    """One real f16 export for the GGUF tests. Module-scoped fixtures run before the autouse one that
    sets HONE_HOME, so this sets the same session-wide home itself (the converters are fetched once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HONE_HOME", str(tmp_path_factory.getbasetemp() / "hone-home"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        run = make_run(tmp_path_factory.mktemp("gguf"), tiny_model_dir, "lora")
        return gguf.to_gguf(run, quant="f16")


def test_gguf_export_writes_model_lora_and_modelfile(f16_export: gguf.GGUFExport) -> None:
    from gguf import GGUFReader

    run = f16_export.run
    assert f16_export.model == run / "export" / "gguf-f16" / "lora-f16.gguf"
    assert f16_export.modelfile.read_text().startswith("FROM ./lora-f16.gguf\n")
    assert 'SYSTEM """Reply in JSON."""' in f16_export.modelfile.read_text()
    assert f16_export.lora is not None and f16_export.lora_skipped is None
    adapter = GGUFReader(f16_export.lora)
    assert bytes(adapter.fields["general.type"].parts[-1]).decode() == "adapter"
    assert float(adapter.fields["adapter.lora.alpha"].parts[-1][0]) == 8.0
    assert len(adapter.tensors) == 2 * 7 * 2, "lora_a and lora_b for the 7 linear layers of both blocks"
    record = json.loads((f16_export.folder / "export.json").read_text())
    assert record["llama_cpp"] == llama_cpp.LLAMA_CPP_PYTHON
    assert record["files"]["lora"] == "lora-lora-f16.gguf"
    assert RunFolder.open(run).manifest.artifacts["export_gguf_f16"] == "export/gguf-f16"
    name = GGUFReader(f16_export.model).fields["general.name"]
    assert bytes(name.parts[-1]).decode() == "lora", "the run's name, not the folder's"


def test_gguf_f16_parity_matches_the_merged_model(f16_export: gguf.GGUFExport) -> None:
    result = parity.parity_check(f16_export)

    assert result.prompt_source == "fixed chats" and len(result.prompts) == 3
    assert all(row.tokens_match and row.outputs_match for row in result.prompts), result.to_dict()
    assert result.ok and result.max_logit_diff < 1e-2
    assert "Reply in JSON." in result.prompts[0].prompt, "prompts carry the run's system prompt"
    assert json.loads((f16_export.folder / "parity.json").read_text())["matched"] == 3


def chats(root: Path, name: str, systems: list[str]) -> Path:
    """A JSONL file of support chats, the i-th starting with systems[i]."""
    rows = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Where is order {i}?"},
                {"role": "assistant", "content": f'{{"order": {i}, "status": "shipped"}}'},
            ]
        }
        for i, system in enumerate(systems)
    ]
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def export_command(
    run: Path, *options: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """`hone export RUN --gguf --quant f16 ...` as a user runs it; its stderr."""
    monkeypatch.setattr(sys, "argv", ["hone", "export", str(run), "--gguf", "--quant", "f16", *options])
    monkeypatch.setenv("COLUMNS", "200")
    main()
    return capsys.readouterr().err


def test_the_system_prompt_of_the_training_data_becomes_the_modelfiles_and_parity_sends_none(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    system = "You are Acme's order desk. Reply in JSON."
    data = {
        "train": str(chats(tmp_path, "train", [system] * 10)),
        "test": str(chats(tmp_path, "test", [system] * 2)),
    }
    run = make_run(tmp_path, tiny_model_dir, "lora", data=data)

    stderr = export_command(run, "--no-parity", monkeypatch=monkeypatch, capsys=capsys)

    folder = run / "export" / "gguf-f16"
    text = (folder / "Modelfile").read_text()
    assert f'SYSTEM """{system}"""' in text, "data.system_prompt is unset: the training data's prompt is used"
    assert not [line for line in text.splitlines() if line.startswith("#")] and "warning" not in stderr
    assert json.loads((folder / "export.json").read_text())["system_prompt"]["source"] == data["train"]

    finished = open_language_model_run(run, "export")
    prompts, source = parity.parity_prompts(finished, modelfile=folder / "Modelfile")
    assert source == f"test split ({data['test']})"
    labels = [label for label, _ in prompts]
    assert labels == ["Where is order 0?", "Where is order 1?", "no system message: Where is order 0?"]
    assert prompts[2][1] == prompts[0][1], "with the Modelfile's SYSTEM, Ollama sends the prompt as trained"

    (folder / "Modelfile").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("SYSTEM"))
    )
    prompts, _ = parity.parity_prompts(finished, modelfile=folder / "Modelfile")
    sent = prompts[2][1]
    assert system not in sent and "named SmolLM" in sent, "without SYSTEM, the family's default shows"


def test_differing_training_system_prompts_leave_a_comment_and_a_warning(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    systems = ["Reply in JSON.", "Reply in YAML.", "Reply in one word."] * 3
    train = chats(tmp_path, "train", systems)
    run = make_run(tmp_path, tiny_model_dir, "lora", data={"train": str(train)})

    stderr = " ".join(export_command(run, "--no-parity", monkeypatch=monkeypatch, capsys=capsys).split())

    text = (run / "export" / "gguf-f16" / "Modelfile").read_text()
    assert not [line for line in text.splitlines() if line.startswith("SYSTEM")]
    expected = f"the training examples in {train} share no one system prompt (3 different ones, on 9 of 9)"
    assert f"\n# {expected}, so the Modelfile sets none: callers must send" in text
    assert f"warning: {expected}" in stderr


def test_converter_writes_q8_0(f16_export: gguf.GGUFExport, tmp_path: Path) -> None:
    from gguf import GGMLQuantizationType, GGUFReader

    out_file = tmp_path / "m-q8_0.gguf"
    command = gguf.model_command(llama_cpp.llama_cpp_tools(), f16_export.merged, out_file, "q8_0", "m")
    llama_cpp.run_tools({"convert_hf_to_gguf.py": command})

    matrices = [t for t in GGUFReader(out_file).tensors if len(t.shape) == 2]
    assert matrices and all(t.tensor_type == GGMLQuantizationType.Q8_0 for t in matrices)


def test_dora_and_qlora_runs_get_no_lora_gguf(tmp_path: Path, tiny_model_dir: Path) -> None:
    dora = open_language_model_run(
        make_run(tmp_path / "dora", tiny_model_dir, "lora", use_dora=True), "export"
    )
    assert "DoRA" in str(gguf.lora_refusal(dora))
    qlora = open_language_model_run(make_run(tmp_path / "qlora", tiny_model_dir, "qlora"), "export")
    assert "NF4" in str(gguf.lora_refusal(qlora))


def test_converter_failures_show_the_end_of_their_output(tmp_path: Path) -> None:
    failing = [
        sys.executable,
        "-c",
        "import sys; print('loading', flush=True); sys.exit('Model Foo is not supported')",
    ]
    with pytest.raises(
        HoneError, match=r"convert_hf_to_gguf.py failed \(exit code 1\):\n  loading\n  Model Foo"
    ):
        llama_cpp.run_tools({"convert_hf_to_gguf.py": failing})


def test_k_quants_need_llama_quantize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HONE_LLAMA_QUANTIZE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HoneError, match="HONE_LLAMA_QUANTIZE"):
        gguf.to_gguf(tmp_path / "no-run", quant="q4_k_m")
    with pytest.raises(HoneError, match="unknown GGUF type"):
        gguf.to_gguf(tmp_path / "no-run", quant="q3")


def test_llama_quantize_turns_the_f16_into_the_k_quant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "llama-quantize"
    fake.write_text('#!/bin/sh\necho "$@" > "$2.args"\ncp "$1" "$2"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("HONE_LLAMA_QUANTIZE", str(fake))
    half = tmp_path / "m-f16.gguf"
    half.write_text("f16")

    gguf.quantize(llama_cpp.llama_quantize(), half, tmp_path / "m-q4_k_m.gguf", "q4_k_m")

    assert (tmp_path / "m-q4_k_m.gguf").read_text() == "f16"
    assert (tmp_path / "m-q4_k_m.gguf.args").read_text().split()[-1] == "Q4_K_M"
    assert not half.exists(), "the f16 it started from is removed"


def test_converters_that_cannot_be_fetched_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HONE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(HoneError, match="HONE_LLAMA_CPP") as refused:
        llama_cpp.llama_cpp_tools()
    assert "llama-cpp-python==0.3.36" in str(refused.value)
    assert not list((tmp_path / "home" / "tools").iterdir()), "no half-fetched tools folder"

    monkeypatch.setenv("HONE_LLAMA_CPP", str(tmp_path))
    with pytest.raises(HoneError, match=r"no convert_hf_to_gguf\.py"):
        llama_cpp.llama_cpp_tools()


def test_unfinished_runs_do_not_export(tmp_path: Path, tiny_model_dir: Path) -> None:
    run = make_run(tmp_path, tiny_model_dir, "lora")
    RunFolder.open(run).update(status="failed")
    with pytest.raises(HoneError, match="only completed runs export"):
        merging.merge(run)
    with pytest.raises(HoneError, match="not a run folder"):
        merging.merge(tmp_path)


@pytest.mark.slow
def test_real_model_q8_0_gguf_keeps_its_answers(tmp_path: Path) -> None:
    """Measured on SmolLM2-135M: f16 reproduces all three answers (max |logit diff| 0.04); q8_0 keeps
    the tokens and two of three answers, and one list of primes ends earlier (max |logit diff| 1.25)."""
    from hone.models.resolve import resolve_model

    run = make_run(tmp_path, resolve_model("smollm2-135m-instruct"), "lora")
    exported = gguf.to_gguf(run, quant="q8_0")
    result = parity.parity_check(exported)

    assert all(row.tokens_match for row in result.prompts), result.to_dict()
    assert "Paris" in result.prompts[0].merged_output and result.prompts[0].outputs_match, result.to_dict()
    assert result.ok and result.max_logit_diff < 2.5, result.to_dict()
    assert exported.lora is not None and 'PARAMETER stop "<|im_end|>"' in exported.modelfile.read_text()


def poison(folder: Path, name: str, value: float = float("nan")) -> None:
    """Put one non-finite value into a tensor of a saved weights folder, as a diverged run would."""
    from safetensors.torch import load_file, save_file

    file = next(folder.glob("*.safetensors"))
    tensors = load_file(file)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    save_file(tensors, file, metadata={"format": "pt"})


def export_exit(
    run: Path, *options: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`hone export RUN OPTIONS` in this process: its exit code and its stderr on one line."""
    monkeypatch.setattr(sys, "argv", ["hone", "export", str(run), *options])
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), " ".join(capsys.readouterr().err.split())


def test_merge_refuses_adapter_or_model_weights_that_are_not_finite(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = make_run(tmp_path / "lora", tiny_model_dir, "lora")
    tensor = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    poison(lora / "adapter", tensor)
    code, message = export_exit(lora, "--merge", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert f"{lora / 'adapter' / 'adapter_model.safetensors'}: tensor {tensor}: 1 of" in message
    assert "NaN or infinite" in message and "train.learning_rate" in message
    assert not (lora / "export").exists(), "nothing is written"

    full = make_run(tmp_path / "full", tiny_model_dir, "full")
    poison(full / "model", "model.norm.weight", float("inf"))
    code, message = export_exit(full, "--merge", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and f"{full / 'model' / 'model.safetensors'}: tensor model.norm.weight" in message
    assert not (full / "export").exists()


def test_merge_refuses_a_base_that_makes_the_merged_weights_not_finite(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    poison(base, "model.layers.1.mlp.up_proj.weight")
    run = make_run(tmp_path / "runs", base, "lora")
    with pytest.raises(
        HoneError, match=r"merged with the adapter, tensor model\.layers\.1\.mlp\.up_proj\.weight"
    ):
        merging.merge(run)
    assert not (run / "export").exists()


def test_parity_of_nan_logits_is_a_failure_not_a_match(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    broken = load_model(tiny_model_dir)
    with torch.no_grad():
        broken.model.norm.weight.fill_(float("nan"))
    models = (broken, broken)
    row = parity.compare_prompt(PROMPT, tokenizer, tokenizer, models, max_new_tokens=4)
    assert row[1], "the same model greedy-decodes NaN logits to the same tokens"
    assert row[2] is None and row[5] == (
        "the merged model's logits are NaN or infinite; the GGUF's logits are NaN or infinite"
    )
    result = parity.ParityResult("f16", "given prompts", 4, [parity.PromptParity("p", PROMPT, *row)])
    assert not result.ok and result.matched == 0 and result.max_logit_diff is None
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["problems"] == [f"p: {row[5]}"]


def test_gguf_export_of_a_model_that_says_nothing_fails_parity(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zero final norm makes every logit 0: both sides greedily emit <|endoftext|> and nothing else.
    The two empty generations are identical, and parity must not call that a pass."""
    run = make_run(tmp_path, tiny_model_dir, "full")
    from safetensors.torch import load_file, save_file

    file = run / "model" / "model.safetensors"
    tensors = load_file(file)
    tensors["model.norm.weight"] = torch.zeros_like(tensors["model.norm.weight"])
    save_file(tensors, file, metadata={"format": "pt"})

    code, message = export_exit(run, "--gguf", "--quant", "f16", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1
    assert "parity proves nothing for" in message
    assert "the merged model generated no text (only end-of-text or special tokens)" in message
    record = json.loads((run / "export" / "gguf-f16" / "parity.json").read_text())
    assert not record["ok"] and record["matched"] == 0 and len(record["problems"]) == 3
    assert all(row["outputs_match"] for row in record["prompts"]), "identical, and still a failure"
