"""What OpenMP's waiting policy and torch's thread count cost a whole run on this machine.

``python benchmarks/bench_threads.py --json`` runs the bundled default config (``compiled-opt run``, in a
fresh process each time, so torch and OpenMP start anew) under each setting, interleaved ``--reps``
times, and reports each setting's median wall time and its ratio to compiled-opt's default (``passive``:
``OMP_WAIT_POLICY=PASSIVE``, torch's own thread count). ``spinning`` is OpenMP's default waiting policy;
``one_thread`` adds ``runtime.threads = 1``. The machine is shared: ratios, measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "compiled-opt")
SETTINGS = {
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "spinning": ({"OMP_WAIT_POLICY": "ACTIVE"}, 0),
    "one_thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1),
}


def config(directory: Path, threads: int) -> Path:
    text = (ROOT / "compiled_opt.toml").read_text().replace('directory = "data"', f'directory = "{ROOT / "data"}"')
    path = directory / f"threads{threads}.toml"
    path.write_text(text.replace("[runtime]\n", f"[runtime]\nthreads = {threads}\n"))
    return path


def timed(path: Path, env: dict[str, str], out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [CLI, "run", str(path), "-q", "--output", str(out)], check=True, capture_output=True, env={**os.environ, **env}
    )
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default)")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep in range(args.reps):
            for name, (env, threads) in SETTINGS.items():
                times[name].append(timed(config(tmp, threads), env, tmp / f"{name}{rep}"))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                "reps": args.reps,
                "cpus": os.cpu_count(),
                "load_1min": os.getloadavg()[0],
                "median_s": median,
                "times_s": times,
                "ratio_to_passive": {n: m / median["passive"] for n, m in median.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
