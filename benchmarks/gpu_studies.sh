#!/usr/bin/env bash
# The one prepared command on a lent GPU machine, over carried/ (benchmarks/gpu_carry.sh): install
# the carried airbench wheel (no network there), then parity.gpu_check's studies stage on all the
# data, each STUDY (RECIPE:ARMS:RUNS) a parity.compare study sharing the budget, everything
# written to OUT as it goes, COMMIT (the commit sent from here) recorded.
#   benchmarks/gpu_studies.sh OUT COMMIT BUDGET_MINUTES STUDY [STUDY ...]
#   e.g. benchmarks/gpu_studies.sh $OUT/h100 $(git rev-parse --short=12 HEAD) 8 \
#          airbench94_muon:jax,torch,upstream:200
set -u
out=${1:?OUT}; commit=${2:?COMMIT}; budget=${3:?BUDGET_MINUTES}; shift 3
[ $# -ge 1 ] || { echo "give at least one STUDY (RECIPE:ARMS:RUNS)" >&2; exit 2; }
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
$py -m pip install -q --no-deps --no-index carried/airbench-*.whl > "$out/pip.txt" 2>&1
studies=(); for s in "$@"; do studies+=(--study "$s"); done
timeout -s TERM "$(awk -v b="$budget" 'BEGIN{print int(b*60+60)}')" \
  $py -m parity.gpu_check --out "$out" --data-dir carried --upstream-dir carried/upstream \
  --commit "$commit" --budget-minutes "$budget" "${studies[@]}" 2>&1 | tee "$out/log.txt"
rc=${PIPESTATUS[0]}
find "$out" -name '*.lock' -delete
exit "$rc"
