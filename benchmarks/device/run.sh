#!/usr/bin/env bash
# On the GPU machine (the device tool's `run`, from the repository root, carrying .whl and .kit made by
# benchmarks/device/kit.sh): installs the wheels beside the image's torch, then runs the command given,
# with hone importable from src/ and nothing fetched. Results go to $OUT when the device tool sets it.
#   bash benchmarks/device/run.sh python3 benchmarks/train_throughput.py --model .kit/tokenizer \
#     --shape llama-3.2-1b --steps 20 --rounds 1 --out '$OUT/throughput.json'
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HONE_HOME=${HONE_HOME:-/tmp/hone} TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
eval "$@"
