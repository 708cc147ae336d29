#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with compiled-opt,
# its Toto and Kronos extras and the test tools.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU build these machines carry.
.venv/bin/pip install -q torch==2.13.0
# toto-ts pins torch==2.7.0 and many exact versions; its real runtime needs come with the [toto] extra.
.venv/bin/pip install -q --no-deps toto-ts==0.2.0
.venv/bin/pip install -q -e ".[toto,kronos,dev]"
echo "compiled-opt installed in .venv"
