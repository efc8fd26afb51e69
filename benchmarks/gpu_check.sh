#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, build June's gpu profile from small real
# checkpoints, serve it on a real tritonserver, and print its figures against the cpu
# profile measured on the same machine in the same run.
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]        (from the repository root)
#
# Run it where TensorRT-LLM and tritonserver are installed: the NGC image
# nvcr.io/nvidia/tritonserver:<release>-trtllm-python-py3 (compose's june-engines image
# has June in it too). Each step stops with one line saying what is missing.
#   JUNE_WHISPER_PT               an openai-whisper .pt (default: none; the ASR engine
#                                 step stops without one)
#   JUNE_TRTLLM_WHISPER_CONVERT   TensorRT-LLM's whisper convert_checkpoint.py (default:
#                                 the NGC image's examples)
#   JUNE_GPU_LLM                  the LLM to build (default: smollm2-135m-instruct, the
#                                 offline package; any listed name works)
set -euo pipefail

WORK=${1:-$PWD/var/gpu-check}
LLM=${JUNE_GPU_LLM:-smollm2-135m-instruct}
CONVERT=${JUNE_TRTLLM_WHISPER_CONVERT:-/app/tensorrt_llm/examples/models/core/whisper/convert_checkpoint.py}
PORT_BASE=${JUNE_GPU_CHECK_PORT:-18000}
mkdir -p "$WORK"
export JUNE_CACHE_DIR=${JUNE_CACHE_DIR:-$WORK/cache}

stop() { echo "gpu_check: STOP: $*" >&2; exit 3; }
step() { echo "gpu_check: == $*" >&2; }

# 1. the GPU, TensorRT-LLM, tritonserver and June ---------------------------------------
step "1/5 tools"
command -v nvidia-smi >/dev/null || stop "no NVIDIA driver here (nvidia-smi not found)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >&2 || stop "nvidia-smi sees no GPU"
python3 -c "import tensorrt_llm" 2>/dev/null \
  || pip install -q tensorrt-llm 2>/dev/null \
  || stop "TensorRT-LLM is not installed and cannot be installed here: run in the NGC -trtllm-python-py3 image"
command -v trtllm-build >/dev/null || stop "trtllm-build is not on PATH (TensorRT-LLM's CLI)"
command -v tritonserver >/dev/null || stop "tritonserver is not on PATH: run in the NGC tritonserver image"
command -v june >/dev/null || pip install -q '.[export]' || stop "June is not installed and pip cannot install it here"
python3 -m pip install -q --no-deps silero-vad==6.2.1 2>/dev/null || true

# 2. engines ------------------------------------------------------------------------------
step "2/5 TensorRT-LLM engines ($LLM; Whisper from ${JUNE_WHISPER_PT:-nothing})"
june export llm --source "$LLM" --target gpu --out "$WORK/engines/llm" \
  || stop "the LLM engine did not build (see above)"
[ -n "${JUNE_WHISPER_PT:-}" ] || stop "set JUNE_WHISPER_PT to an openai-whisper .pt to build the ASR engines"
[ -f "$CONVERT" ] || stop "TensorRT-LLM's whisper convert_checkpoint.py is not at $CONVERT (set JUNE_TRTLLM_WHISPER_CONVERT)"
june export whisper --source "$JUNE_WHISPER_PT" --target gpu --allow-unlisted \
  --convert-script "$CONVERT" --out "$WORK/engines/whisper" \
  || stop "the Whisper engines did not build (see above)"

# 3. both repositories ----------------------------------------------------------------------
step "3/5 model repositories (gpu, and cpu as the baseline)"
JUNE_ASR_ENGINE_DIR=$WORK/engines/whisper JUNE_LLM_ENGINE_DIR=$WORK/engines/llm \
  june repo build --profile gpu --out "$WORK/repo-gpu"
JUNE_LLM_MODEL=$LLM june repo build --profile cpu --out "$WORK/repo-cpu"

# 4 + 5. serve each on a real tritonserver, and measure it -----------------------------------
serve_and_measure() {  # profile, repository, extra figures options...
  local profile=$1 repo=$2; shift 2
  local http=$PORT_BASE grpc=$((PORT_BASE + 1)) metrics=$((PORT_BASE + 2))
  step "4/5 tritonserver on the $profile repository"
  tritonserver --model-repository="$repo" --http-address=127.0.0.1 --grpc-address=127.0.0.1 \
    --http-port=$http --grpc-port=$grpc --metrics-port=$metrics --strict-readiness=true \
    --exit-on-error=true >"$WORK/triton-$profile.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do
    curl -sf "127.0.0.1:$http/v2/health/ready" >/dev/null && break
    kill -0 $pid 2>/dev/null || { tail -20 "$WORK/triton-$profile.log" >&2; stop "tritonserver ($profile) died"; }
    sleep 2
  done
  curl -sf "127.0.0.1:$http/v2/health/ready" >/dev/null || stop "tritonserver ($profile) not ready in 10 min"
  step "5/5 figures ($profile)"
  june bench figures --url "127.0.0.1:$grpc" --label "$profile" --save "$WORK/$profile.json" "$@"
  kill $pid; wait $pid || true
}
serve_and_measure cpu "$WORK/repo-cpu"
serve_and_measure gpu "$WORK/repo-gpu" --baseline "$WORK/cpu.json"
echo "gpu_check: done; figures in $WORK/gpu.json and $WORK/cpu.json" >&2
