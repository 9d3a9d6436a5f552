#!/usr/bin/env bash
# Repeated, alternating benchmark runs, reported as medians: on a shared machine one run decides nothing.
#
#   ROUNDS=3 CASES=nginx,sluice-plain bench/ab.sh
#       runs bench/run.sh ROUNDS times; prints, per case, the median over rounds of its ratio to the nginx
#       baseline measured in the same round (and the spread).
#   BASE_BIN=/tmp/sluice-before ROUNDS=3 bench/ab.sh
#       before/after: every round runs the cases with BASE_BIN ("A") and then with SLUICE_BIN ("B", default
#       build/sluice), alternating, and also prints the median B/A ratio of each Sluice case.
#
# Every other variable of bench/run.sh (DURATION, CASES, CONNECTIONS, ...) is passed through. Writes
# RESULTS_DIR/ab-<date-time>.json|md (RESULTS_DIR defaults to bench/results); each run's own results stay in a
# temp dir (KEEP_TMP=1 keeps it). Exits non-zero when any run failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROUNDS=${ROUNDS:-3}
BASE_BIN=${BASE_BIN:-}
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/sluice}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ab: ROUNDS must be a positive integer" >&2; exit 2; }
[[ -z $BASE_BIN || -x $BASE_BIN ]] || { echo "ab: BASE_BIN $BASE_BIN is not executable" >&2; exit 2; }
OUT=$(mktemp -d -t sluice-ab.XXXXXX)
[[ ${KEEP_TMP:-0} == 1 ]] || trap 'rm -rf "$OUT"' EXIT

rc=0
for ((i = 1; i <= ROUNDS; i++)); do
  for side in A B; do
    if [[ $side == A ]]; then
      [[ -n $BASE_BIN ]] || continue
      bin=$BASE_BIN
    else
      bin=$SLUICE_BIN
    fi
    echo "[ab] round $i/$ROUNDS, ${BASE_BIN:+side $side, }binary $bin" >&2
    dir=$OUT/round$i-$side
    if ! SLUICE_BIN=$bin RESULTS_DIR=$dir SLUICE_BUILD=0 bash "$HERE/run.sh" >"$dir.log" 2>&1; then
      echo "[ab] run failed (round $i side $side): $(tail -3 "$dir.log")" >&2
      rc=3
    fi
  done
done
mkdir -p "$RESULTS_DIR"
python3 "$HERE/lib/ab_report.py" --runs "$OUT" --out "$RESULTS_DIR" --base-bin "$BASE_BIN" --bin "$SLUICE_BIN" || rc=3
exit "$rc"
