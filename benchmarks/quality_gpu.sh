#!/usr/bin/env bash
# The T1→T2 leave-one-subject-out folds of benchmarks/quality.py with medtrans's defaults, several trainings at once on
# one GPU (docs/benchmarks.md, "Defaults against the baselines"):
#   bash benchmarks/quality_gpu.sh OUT [ITERATIONS] [METHODS...]
# One process per method and fold, each on one CPU thread; a run still going after $LIMIT seconds (default 480) is
# stopped and reported as unfinished. Each process writes OUT/<method>_<fold>/runs.csv; OUT/runs.csv gathers them.
set -uo pipefail
out=$1; iterations=${2:-2000}; shift 2 || shift $#
methods=("$@"); [ ${#methods[@]} -gt 0 ] || methods=(nec cut)
limit=${LIMIT:-480}
folds=(lesjak-patient07 lesjak-patient19 lesjak-patient26 tcga-TCGA-DU-7294 tcga-TCGA-FG-6692)
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for method in "${methods[@]}"; do
  for fold in "${folds[@]}"; do
    OMP_NUM_THREADS=1 timeout "$limit" python3 "$repo/benchmarks/quality.py" --task t1-t2 --methods "$method" --dims 3 \
      --iterations "$iterations" --split all-but-one --test "$fold" --patch ${PATCH:-64 64 64} --threads 1 \
      --output "$out/${method}_${fold}" ${EXTRA:-} >"$out/${method}_${fold}.log" 2>&1 &
  done
done
wait
python3 - "$out" <<'PY'
import sys, pathlib, pandas as pd
out = pathlib.Path(sys.argv[1])
frames = [pd.read_csv(p) for p in sorted(out.glob("*/runs.csv"))]
if frames:
    pd.concat(frames).drop_duplicates().to_csv(out / "runs.csv", index=False)
logs = sorted(out.glob("*.log"))
with open(out / "logs.txt", "w") as f:
    for log in logs:
        f.write(f"==> {log.name}\n" + "".join(log.read_text().splitlines(True)[-6:]))
PY
