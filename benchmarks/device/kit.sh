#!/usr/bin/env bash
# What a GPU machine with no package index and no model hub needs to run hone's benchmarks:
#   .whl/            wheels of the Python packages hone needs that the machine's image lacks or holds in
#                    other versions, pinned to the versions of this checkout's .venv, for CPython 3.12 on
#                    manylinux x86-64 (pass another Python version as the first argument)
#   .kit/tokenizer/  the default model's tokenizer and config: --model for benchmarks/train_throughput.py
#                    --shape, whose random-weight models train with this tokenizer
# Both are git-ignored; name them in the device tool's `carry`. Run benchmarks/device/run.sh there.
# Usage (after `make install`): bash benchmarks/device/kit.sh [python-version]
set -euo pipefail
cd "$(dirname "$0")/../.."
python_version=${1:-3.12}
venv=.venv/bin/python
# hone's runtime needs beyond the GPU image's packages (their list: the device tool's KINDS.md), and
# transformers/peft/accelerate/tokenizers at this checkout's versions rather than the image's
needed="trl datasets dill multiprocess pydantic pydantic-core annotated-types typing-inspection jsonschema
jsonschema-specifications referencing rpds-py transformers peft accelerate tokenizers"
pins=$($venv - "$needed" <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1].split()))
PY
)
rm -rf .whl && mkdir -p .whl
platforms=""
for n in 17 24 27 28 31 34; do platforms+=" --platform manylinux_2_${n}_x86_64"; done
$venv -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp $platforms --platform manylinux2014_x86_64 -d .whl $pins liger-kernel==0.8.5
rm -rf .kit/tokenizer && mkdir -p .kit
$venv - <<'PY'
import shutil
from pathlib import Path

from hone.models.resolve import load_tokenizer, resolve_model

source = resolve_model("smollm2-135m-instruct")
load_tokenizer(source).save_pretrained(".kit/tokenizer")
shutil.copy(source / "config.json", Path(".kit/tokenizer/config.json"))
PY
du -sh .whl .kit
