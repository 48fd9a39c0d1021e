#!/usr/bin/env bash
# bench/eval.sh - the evaluation: regenerates docs/eval.md and docs/eval/ (CSV + PNG) from scratch.
#
#   make eval                                  (builds build/bin first)
#   BIN_DIR=build-dev/bin bash bench/eval.sh   (another build)
#
# Optional knobs (defaults in bench/eval/eval.py): EVAL_REPS, EVAL_ITERATIONS, EVAL_CRASH_RUNS,
# EVAL_CRASH_DURATION, EVAL_KILLS, EVAL_SEED. About 5-6 minutes on 2 CPUs.
#
# Needs python3 and gnuplot (gnuplot-nox). bench/eval/eval.py starts local clusters on free
# ports below 32768 through tests/lib/bazaar.py and stops everything it starts by PID; this
# wrapper forwards INT/TERM/HUP to it (by PID), waits, and removes its scratch directory.
# Results are written to a staging directory and moved into docs/ only when the run succeeded,
# so a failed or interrupted run leaves the previous docs/eval.md untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=${BIN_DIR:-build/bin}
# The command docs/eval.md prints to regenerate it: always one that works from a fresh clone
# (make eval builds build/bin first), with the knobs this run used.
command="make eval"
for var in EVAL_REPS EVAL_ITERATIONS EVAL_CRASH_RUNS EVAL_CRASH_DURATION EVAL_KILLS EVAL_SEED; do
  if [ -n "${!var:-}" ]; then
    command="$var=${!var} $command"
  fi
done

for exe in bazaar-catalog bazaar-order bazaar-frontend bazaar-client; do
  if [ ! -x "$BIN_DIR/$exe" ]; then
    echo "eval.sh: $BIN_DIR/$exe is missing; run 'make build' or set BIN_DIR" >&2
    exit 1
  fi
done
for tool in python3 gnuplot; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "eval.sh: $tool not found (scripts/deps.sh installs gnuplot-nox)" >&2
    exit 1
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bazaar-eval.XXXXXX")
pid=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # bounded: eval.py stops its clusters on SIGTERM within seconds; SIGKILL after 30 s
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

start=$(date +%s)
python3 bench/eval/eval.py --bin-dir "$BIN_DIR" --out "$work/out" --tmp "$work/clusters" \
  --command "$command" &
pid=$!
wait "$pid"
pid=""

rm -rf docs/eval docs/eval.md
mkdir -p docs
mv "$work/out/eval" docs/eval
mv "$work/out/eval.md" docs/eval.md
echo "eval.sh: wrote docs/eval.md and docs/eval/ in $(( $(date +%s) - start )) s"
