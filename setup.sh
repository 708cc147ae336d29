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
# Debian's Chromium, for the tests that open a report in a browser (they skip without it): installed when
# this user may (root with apt-get); nothing else needs it.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q chromium >/dev/null 2>&1 || echo "Chromium not installed: the browser tests will skip"
fi
echo "compiled-opt installed in .venv"
