"""The export stage: a merged safetensors model, a GGUF for llama.cpp and Ollama, a parity check.

    <run>/export/
      merged/           the adapter merged into its base: a plain Hugging Face folder, plus export.json
      gguf-<quant>/     <run>-<quant>.gguf, <run>-lora-<type>.gguf (LoRA runs), Modelfile, export.json,
                        parity.json

Every folder is written into a temporary sibling and renamed into place when complete, so a failed
export never leaves a folder that looks usable. GGUF files are written by llama.cpp's own converters,
so they load in llama.cpp and Ollama exactly as files converted by hand would.
"""
