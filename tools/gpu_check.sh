#!/usr/bin/env bash
# The one-shot GPU check: on a machine with a CUDA GPU, a CUDA build of torch and a bare checkout,
# builds the CUDA extension in place, runs the cuda-marked tests, the GPU benchmarks (the fused step
# against per-agent nn.LSTM / nn.LSTMCell at B = 1 ... 4096, the prune mask against torch.topk,
# training throughput at 16 ... 1024 environments per iteration) and a short GPU training of setup A
# that must learn, then prints one summary table. Exits 1 if any step fails, 2 on a usage error.
#
#   tools/gpu_check.sh               the whole check (5-8 minutes on an H100)
#   tools/gpu_check.sh --dry-run     on a machine without a GPU: the argument handling and every step's
#                                    non-GPU part (the extension must be built already; tests and
#                                    benchmarks are collected, not run; the training runs 2 CPU
#                                    iterations and is not judged)
#   tools/gpu_check.sh --out DIR     logs, test report, benchmark JSON and the training run go to DIR
#                                    (default: a new directory under /tmp, printed with the table)
#   tools/gpu_check.sh --skip-build  use the extension already built in place
#
# PYTHON is the interpreter with the CUDA torch (default: python3).
set -uo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
fail_usage() { echo "gpu_check.sh: error: $1 (see --help)" >&2; exit 2; }

dry_run=0 skip_build=0 out=""
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --skip-build) skip_build=1 ;;
    --out)
      (($# >= 2)) && [[ -n "$2" && "$2" != --* ]] || fail_usage "--out needs a directory"
      out="$2"
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) fail_usage "unknown argument $1; the options are --dry-run, --skip-build, --out DIR, --help" ;;
  esac
  shift
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
command -v "$python" > /dev/null || fail_usage "no python at PYTHON=$python"
if [[ -z "$out" ]]; then
  out="$(mktemp -d /tmp/hapruned-gpu-check.XXXXXX)"
else
  mkdir -p "$out" || fail_usage "--out: cannot create $out"
  out="$(cd "$out" && pwd)"
fi
cd "$repo" || exit 2
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's hapruned, whatever is installed

# The short training: the fast preset on setup A, 32 episodes per iteration; Aloha and OCA score about
# 1000 per episode there, the sticky scheme 2395 and the oracle 2660.
LEARNED_REWARD=1500
TRAIN_FLAGS=(--preset fast --setup A --iterations 100 --envs-per-iteration 32 --eval-every 50 --eval-episodes 100)
DRY_TRAIN_FLAGS=(--preset fast --setup A --iterations 2 --envs-per-iteration 4 --minibatches 2 --horizon 20
                 --eval-every 1 --eval-episodes 2 --device cpu --threads 1)

# Each step prints its log to stdout and one line of details to fd 3; returns 0 (ok), 1 (FAIL) or
# 3 (ok in a dry run: only the non-GPU part ran).
py() { "$python" "$@"; }

step_environment() {
  py - "$dry_run" <<'EOF' >&3
import sys, torch
dry = sys.argv[1] == "1"
info = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
if torch.cuda.is_available():
    print(f"{info}, {torch.cuda.get_device_name()}")
    sys.exit(0)
print(f"{info}, no CUDA device" + (": dry run" if dry else " visible (on a CPU machine use --dry-run)"))
sys.exit(3 if dry else 1)
EOF
}

step_build() {
  if ((dry_run || skip_build)); then
    py -c "import hapruned, sys; sys.exit(0 if hapruned.HAS_EXTENSION else 1)" \
      || { echo "the extension is not built (python setup.py build_ext --inplace)" >&3; return 1; }
    ((dry_run)) && { echo "dry run: the CPU extension is present; no CUDA build" >&3; return 3; }
  else
    # The emulated CUDA device (a CPU test device) is not built: the GPU runs the real kernels.
    HAPRUNED_CUDA=1 HAPRUNED_EMULATED_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" py setup.py build_ext --inplace \
      || { echo "build failed (see build.log)" >&3; return 1; }
  fi
  py - <<'EOF' >&3
import sys, torch, hapruned
ops = ["magnitude_prune_mask", "masked_lstm_cell", "masked_lstm_cell_backward", "masked_lstm_seq",
       "masked_lstm_seq_backward"]
missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(f"hapruned::{op}", "CUDA")]
print(f"CUDA kernels missing: {', '.join(missing)}" if missing else f"CUDA kernels of all {len(ops)} ops registered")
sys.exit(1 if missing else 0)
EOF
}

# pytest's outcome counts from a JUnit report: "41 passed, 0 failed, 0 skipped".
junit_counts() {
  py - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, failed = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
skipped = int(suite.get("skipped"))
print(f"{tests - failed - skipped} passed, {failed} failed, {skipped} skipped")
EOF
}

# The dry run of a pytest step: collects the cuda-marked cases under $1 ($2 names them), runs none.
collect_cuda_cases() {
  local count
  count=$(py -m pytest "$1" -m cuda --collect-only -q -p no:cacheprovider | tee /dev/stderr | grep -c '::') \
    || { echo "collecting the $2 failed" >&3; return 1; }
  echo "dry run: $count $2 collected" >&3
  return 3
}

step_cuda_tests() {
  ((dry_run)) && { collect_cuda_cases tests "cuda tests"; return; }
  py -m pytest tests -m cuda -q -p no:cacheprovider --junitxml="$out/cuda-tests.xml"
  local status=$? counts
  counts=$(junit_counts "$out/cuda-tests.xml") || { echo "no test report (see cuda-tests.log)" >&3; return 1; }
  echo "$counts" >&3
  ((status == 0)) && [[ "$counts" == *" 0 skipped" ]]  # on a GPU every cuda test runs
}

step_gpu_benchmarks() {
  ((dry_run)) && { collect_cuda_cases benchmarks "GPU benchmark cases"; return; }
  py -m pytest benchmarks -m cuda -q -p no:cacheprovider --benchmark-only --benchmark-max-time=0.5 \
    --benchmark-json="$out/benchmarks.json" || { echo "benchmarks failed" >&3; return 1; }
  echo "ratios below (benchmarks.json)" >&3
}

step_training() {
  local flags=("${TRAIN_FLAGS[@]}" --device cuda)
  ((dry_run)) && flags=("${DRY_TRAIN_FLAGS[@]}")
  rm -rf "$out/train"
  py -m hapruned train "${flags[@]}" --out "$out/train" --json > "$out/train-summary.json" \
    || { echo "training failed" >&3; return 1; }
  py - "$out/train-summary.json" "$LEARNED_REWARD" "$dry_run" <<'EOF' >&3
import json, sys
reward, threshold, dry = json.load(open(sys.argv[1]))["final_eval_reward"], float(sys.argv[2]), sys.argv[3] == "1"
if dry:
    print(f"dry run: 2 CPU iterations, final eval reward {reward:.1f} (not judged)")
    sys.exit(3)
print(f"final eval reward {reward:.1f} " + (f">= {threshold:.0f}: learned" if reward >= threshold else f"< {threshold:.0f}: DID NOT LEARN"))
sys.exit(0 if reward >= threshold else 1)
EOF
}

# One line per benchmark group from the benchmark JSON (means): each case's time and how many times
# the fused op's it is, or a training case's agent-steps per second.
benchmark_ratios() {
  py - "$1" <<'EOF'
import json, sys
from collections import defaultdict
groups = defaultdict(list)
for bench in json.load(open(sys.argv[1]))["benchmarks"]:
    groups[bench["group"]].append(bench)
for group, benches in groups.items():
    if "agent_steps_per_s" in benches[0]["extra_info"]:
        cells = [f"{b['param']} envs: {b['extra_info']['agent_steps_per_s']:.0f} agent-steps/s" for b in benches]
    else:
        times = {b["params"]["kind"]: b["stats"]["mean"] for b in benches}
        fused = times.get("fused") or times.get("fused_sequence")
        cells = [f"{kind} {t * 1e3:.3f} ms" + (f" = {t / fused:.1f}x fused" if fused and t != fused else "")
                 for kind, t in times.items()]
    print(f"  {group}: " + ", ".join(cells))
EOF
}

names=() statuses=() times=() details=()
failed=0
run_step() {  # run_step NAME FUNCTION: runs it, logging to $out/NAME.log, and records the result
  local name="$1" started=$SECONDS status detail
  echo "== $name" >&2
  detail=$("$2" 3>&1 > "$out/$name.log" 2>&1)
  status=$?
  case $status in
    0) status=ok ;;
    3) status="dry run" ;;
    *) status=FAIL failed=1 ;;
  esac
  names+=("$name") statuses+=("$status") times+=("$((SECONDS - started)) s") details+=("${detail:-see $name.log}")
}

run_step environment step_environment
if [[ "${statuses[0]}" == FAIL ]]; then
  for name in build cuda-tests gpu-benchmarks training; do
    names+=("$name") statuses+=("not run") times+=("") details+=("")
  done
else
  run_step build step_build
  run_step cuda-tests step_cuda_tests
  run_step gpu-benchmarks step_gpu_benchmarks
  run_step training step_training
fi

echo
echo "hapruned GPU check$( ((dry_run)) && echo " (dry run)"), $(date -u +%Y-%m-%dT%H:%MZ), logs in $out"
printf '%-15s %-8s %7s  %s\n' step status time details
for i in "${!names[@]}"; do
  printf '%-15s %-8s %7s  %s\n' "${names[$i]}" "${statuses[$i]}" "${times[$i]}" "${details[$i]}"
done
[[ -f "$out/benchmarks.json" ]] && ((!dry_run)) && benchmark_ratios "$out/benchmarks.json"
if ((failed)); then
  echo "FAILED"
  exit 1
fi
echo "all steps passed"
