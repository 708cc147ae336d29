#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with compiled-opt, its Toto,
# Kronos and Ray extras and the test tools.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU build these machines carry.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[toto,kronos,ray,dev]"
# Last, and without its dependencies: toto-ts pins torch 2.7.0 and ~30 exact versions; the [toto]
# extra above brought what it really needs at run time.
.venv/bin/pip install -q --no-deps toto-ts==0.2.0
echo "compiled-opt installed in .venv"
