#!/usr/bin/env bash
# One entry point for set-up and use: creates/refreshes .venv from the repo's own files, then runs the job.
#   bash run.sh test [pytest args]   run the test suite
#   bash run.sh <command> [args]     run any medtrans command, e.g. bash run.sh translate --help
# PYTHON selects the interpreter (default python3, >= 3.10). Set MEDTRANS_TORCH_INDEX to a PyTorch wheel index URL
# (e.g. https://download.pytorch.org/whl/cu124) to install a CUDA build of the pinned torch version.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "medtrans needs Python >= 3.10")'
if [ ! -x "$VENV/bin/python" ]; then
  echo "[medtrans] creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
want=$(cat setup.cfg pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
  echo "[medtrans] installing dependencies into $VENV (log: $VENV/pip.log)" >&2
  extra=()
  if [ -n "${MEDTRANS_TORCH_INDEX:-}" ]; then extra=(--extra-index-url "$MEDTRANS_TORCH_INDEX"); fi
  if ! "$VENV/bin/python" -m pip install -c constraints.txt "${extra[@]}" -e ".[test,demo]" >"$VENV/pip.log" 2>&1; then
    tail -n 40 "$VENV/pip.log" >&2
    echo "[medtrans] pip install failed, see $VENV/pip.log" >&2
    exit 1
  fi
  echo "$want" >"$VENV/.installed"
fi
cmd=${1:-test}
shift || true
case "$cmd" in
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  *) exec "$VENV/bin/medtrans" "$cmd" "$@" ;;
esac
