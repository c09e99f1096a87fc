#!/usr/bin/env bash
# The one command run on a lent GPU machine (its image's python3, torch and jax; nothing installed):
# library versions and nvidia-smi, a probe that this jaxlib accepts the XLA flags parity.gpu_check
# sets (an unknown flag aborts the process; refused flags are recorded and XLA's defaults used),
# then parity.gpu_check on the carried data subset.
#   benchmarks/gpu_lease.sh OUT_DIR SUBSET.npz [BUDGET_MINUTES] [extra gpu_check options]
set -u
out=${1:?OUT_DIR}; subset=${2:?SUBSET.npz}; budget=${3:-6.5}; shift 3 2>/dev/null || shift $#
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
{ date -u; uname -a; nvidia-smi 2>&1; $py --version
  $py -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda[0-9]+-(plugin|pjrt)|flax|optax|torch|numpy|scipy|filelock|hypothesis) '
} > "$out/versions.txt" 2>&1
if ! $py -c "import parity.gpu_check as g; g.setup_environment(); import jax; print(jax.devices())" \
     >> "$out/versions.txt" 2>&1; then
  echo "jax refused parity.gpu_check's XLA flags (above); this run uses XLA's defaults" \
    | tee -a "$out/versions.txt"
  export XLA_FLAGS=" "
fi
timeout -s TERM "$(awk -v b="$budget" 'BEGIN{print int(b*60+90)}')" \
  $py -m parity.gpu_check --out "$out" --subset "$subset" --budget-minutes "$budget" "$@" \
  2>&1 | tee "$out/log.txt"
rc=${PIPESTATUS[0]}
# a result folder comes back as at most 8 files: the lock file and any torn temporary are not results
rm -f "$out"/*.lock "$out"/*.tmp
exit "$rc"
