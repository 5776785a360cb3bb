#!/usr/bin/env bash
# Wheels that bench/gpu_check.py needs on a lent GPU machine whose Python (3.12, with torch) cannot reach a
# registry: our pinned transformers and peft (the machine's own are older) and soundfile (for --pipeline).
# Run here, then carry .whl to the device and install it there into a folder first on PYTHONPATH:
#
#   bash bench/gpu_wheels.sh
#   # on the device (carry: .whl), in the repo root:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
#     PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --pipeline --json "$OUT/gpu_check.json"
set -euo pipefail
cd "$(dirname "$0")/.."
versions() { grep -iE "^($1)==" <(.venv/bin/python -m pip freeze 2>/dev/null) || true; }
pins=$(versions "transformers|peft|soundfile|cffi|pycparser")
[ -n "$pins" ] || pins="transformers==5.24.0 peft==0.21.2 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12"
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d .whl $pins
ls -l .whl && du -sh .whl
