#!/usr/bin/env bash
# The GPU suite on a CUDA machine that has torch but no network (docs/benchmarks.md, "GPU suite").
#   bash benchmarks/gpu_suite.sh --wheels DIR --out OUT [gpu_suite.py options]
# DIR holds the wheels medtrans needs beyond what the machine has (see the pip download line in docs/benchmarks.md);
# they are installed into a scratch folder, never into the system. Without --wheels the packages must be importable.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
wheels=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
site=${TMPDIR:-/tmp}/medtrans-gpu-site
if [ -n "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$repo:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
exec python3 "$repo/benchmarks/gpu_suite.py" "${args[@]}"
