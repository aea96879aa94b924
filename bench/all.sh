#!/usr/bin/env bash
# Every benchmark, one JSON line per measurement, on stdout. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python bench/step_time.py
python bench/eval_time.py
python bench/stream_length.py
python bench/whole_process.py
python bench/sweep_time.py
python bench/avalanche_compare.py
python bench/quality.py
