#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the framework-neutral code: airbench_common/ and parity/study/stats.py,
# each mutant run against the fast tests that cover it (pyproject.toml [tool.mutmut]: the test
# selection and `-m "not slow"`). Runs in a fresh copy of the committed tree (HEAD) so the working
# tree is never mutated, with ../shared beside it (the lossless-subset tests read it; without it
# the download/archive tests skip and their functions count as "no tests"), PYTHONPATH
# unset so mutmut's mutants/ copy is what is imported, one child, at the lowest CPU priority.
#   [SHARED=/path/to/shared] benchmarks/mutation.sh [common|stats|all] [WORK_DIR]
# Prints the killed / total score per module and leaves the mutmut state in WORK_DIR/repo
# (`cd WORK_DIR/repo && mutmut results`, `mutmut show NAME` for the survivors).
# Took 10.4 min for parity/study/stats.py (861 mutants); airbench_common/ (2444 mutants) ran ~1 mutant/s,
# so ~40 min, on 2 shared cores at load average 6-11 (docs/mutation.md has the scores).
set -eu
target=${1:-all}; work=${2:-${TMPDIR:-/tmp}/airbench-mutation}
case "$target" in
  common) names=("airbench_common.*") ;;
  stats) names=("parity.study.stats.*") ;;
  all) names=() ;;
  *) echo "mutation.sh: unknown target '$target'; use common, stats or all" >&2; exit 2 ;;
esac
repo_root=$(git rev-parse --show-toplevel)
shared=$(cd "${SHARED:-$repo_root/../shared}" 2>/dev/null && pwd -P || true)  # SHARED= overrides
mutmut=${MUTMUT:-$(dirname "$(command -v "${PYTHON:-python3}")")/mutmut}
rm -rf "$work/repo"; mkdir -p "$work/repo"
git -C "$repo_root" archive HEAD | tar -x -C "$work/repo"
# mutmut runs the tests inside repo/mutants/, whose conftest looks for ../shared: link it there too
[ -n "$shared" ] && ln -sfn "$shared" "$work/shared" && ln -sfn "$shared" "$work/repo/shared"
echo "commit $(git -C "$repo_root" rev-parse --short HEAD), $(nproc) CPUs, $(uptime)"
cd "$work/repo"
start=$(date +%s)
env -u PYTHONPATH nice -n 19 "$mutmut" run --max-children 1 "${names[@]}" > "$work/run.log" 2>&1
echo "mutmut run took $(( $(date +%s) - start )) s"
# One line per mutant ("name: status"); score per module = killed / all that were run
# (survived, timeout, "no tests": no selected test covers the function).
"$mutmut" results --all true 2>/dev/null | awk -F': ' '
  /__mutmut_/ && $2 != "not checked" {
                mod = $1; gsub(/^ +/, "", mod); sub(/\.x[^.]*__mutmut_[0-9]+$/, "", mod)
                total[mod]++; if ($2 == "killed") killed[mod]++; else other[mod, $2]++ }
  END { for (m in total) printf "%-28s %5d killed / %5d = %.1f%%\n", m, killed[m], total[m],
                                100 * killed[m] / total[m]
        for (k in other) { split(k, q, SUBSEP); printf "  %-26s %5d %s\n", q[1], other[k], q[2] } }'
