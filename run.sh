#!/usr/bin/env bash
# One entry point for set-up and use: creates/refreshes .venv from the repo's own files, then runs the job.
#   bash run.sh demo [args]          the demo (builds .venv, ~2.1 GB)
#   bash run.sh test [pytest args]   run the test suite (builds .venv and .venv-label, ~5.4 GB together)
#   bash run.sh <command> [args]     run any medtrans command, e.g. bash run.sh translate --help
#   bash run.sh label [args]         MONAI Label from its own venv (.venv-label), e.g. bash run.sh label start_server ...
# PYTHON selects the interpreter (default python3, >= 3.10). Set MEDTRANS_TORCH_INDEX to a PyTorch wheel index URL
# (e.g. https://download.pytorch.org/whl/cu124) to install a CUDA build of the pinned torch version.
set -euo pipefail
CALLER_DIR=$PWD  # relative paths in the command's arguments are the caller's
ROOT=$(cd "$(dirname "$0")" && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV=.venv
LABEL_VENV=.venv-label
usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}
if [ $# -eq 0 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  usage
  exit 0
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "medtrans needs Python >= 3.10")'
# ensure_venv DIR CONSTRAINTS PIP-ARGS...: create DIR and install into it when the repo's install files changed.
ensure_venv() {
  local venv=$1 constraints=$2
  shift 2
  if [ ! -x "$venv/bin/python" ]; then
    echo "[medtrans] creating $venv" >&2
    "$PYTHON" -m venv "$venv"
  fi
  local want
  want=$(cat setup.cfg pyproject.toml "$constraints" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
    echo "[medtrans] installing dependencies into $venv (log: $venv/pip.log)" >&2
    # PIP_CONSTRAINT (not only -c) so that packages built from source see the pins too; --no-compile: modules are
    # compiled when first imported, not all of torch's at install time
    if ! PIP_CONSTRAINT="$PWD/$constraints" SAM2_BUILD_CUDA=0 "$venv/bin/python" -m pip install --no-compile "$@" \
      >"$venv/pip.log" 2>&1; then
      tail -n 40 "$venv/pip.log" >&2
      echo "[medtrans] pip install failed, see $venv/pip.log" >&2
      exit 1
    fi
    echo "$want" >"$venv/.installed"
  fi
}
extra=()
if [ -n "${MEDTRANS_TORCH_INDEX:-}" ]; then extra=(--extra-index-url "$MEDTRANS_TORCH_INDEX"); fi
# MONAI Label pins numpy 1.x and old DICOM libraries: it gets its own venv, the core one keeps numpy 2.
# Its file is a lock, installed as is (--no-deps) unless a CUDA torch index is given, whose torch brings its own
# libraries (then pip resolves monailabel's requirements, sam2 among them, which it builds).
ensure_label_venv() {
  local lock=(--no-deps)
  if [ -n "${MEDTRANS_TORCH_INDEX:-}" ]; then lock=(); fi
  ensure_venv "$LABEL_VENV" constraints-label.txt "${extra[@]}" "${lock[@]}" -r constraints-label.txt -e .
}
ensure_venv "$VENV" constraints.txt "${extra[@]}" -e ".[test,demo]"
cmd=$1
shift
case "$cmd" in
  test) ensure_label_venv; exec "$VENV/bin/python" -m pytest "$@" ;;
  label) ensure_label_venv; cd "$CALLER_DIR"; exec "$ROOT/$LABEL_VENV/bin/python" -m monailabel.main "$@" ;;
  *) cd "$CALLER_DIR"; exec "$ROOT/$VENV/bin/medtrans" "$cmd" "$@" ;;
esac
