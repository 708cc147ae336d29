#!/usr/bin/env bash
# The GPU check in one command, printed as one JSON object on stdout:
#   - the GPU-only tests (tests whose names contain "gpu" or "cuda"; they skip on a CPU);
#   - benchmarks/bench_run.py for random-initialised Toto-base and Kronos-base, 24 symbols x 100 trials
#     x 3 runs, in fast mode and with the default knobs (targets on one H100: Toto <= 60 s, Kronos <= 120 s
#     for the whole run, fast mode >= 3x faster than the default knobs; about 8 minutes in all).
# --tiny runs the same steps on the CPU at a size that takes seconds (tiny checkpoints, 2 symbols x 4
# trials, default mode); tests/test_fast.py runs it that way so that this script cannot rot.
# Environment: PYTHON (default: the checkout's .venv), SYMBOLS and TRIALS (override the GPU sizes).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
if [[ "${1:-}" == "--tiny" ]]; then
    bench=(--device cpu --size tiny --symbols 2 --trials 4 --mode default --loop-calls 2)
else
    bench=(--device cuda --size base --symbols "${SYMBOLS:-24}" --trials "${TRIALS:-100}" --mode fast --mode default
           --loop-calls 5)
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
set +e
"$python" -m pytest -q -p no:cacheprovider -k "gpu or cuda" \
    "$root/tests/test_toto.py" "$root/tests/test_kronos.py" "$root/tests/test_fast.py" >"$work/tests.txt" 2>&1
tests_rc=$?
set -e
"$python" "$root/benchmarks/bench_run.py" --json --backend toto --backend kronos "${bench[@]}" >"$work/bench.json"

"$python" - "$work/tests.txt" "$tests_rc" "$work/bench.json" "$start" <<'EOF'
import json, sys, time

import torch

tests, rc, bench, start = open(sys.argv[1]).read().strip().splitlines(), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
print(json.dumps({
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    "torch": torch.__version__,
    "tests": {"exit_code": rc, "summary": tests[-1] if tests else "", "failures": [l for l in tests if l.startswith("FAILED")]},
    "bench_run": json.load(open(bench)),
    "total_s": time.time() - start,
}))
sys.exit(0 if rc in (0, 5) else 1)  # 5: no GPU-only test collected
EOF
