#!/usr/bin/env bash
# Builds every CMake build type (Debug, Release, RelWithDebInfo, MinSizeRel) with gcc and
# with clang, -Werror on (CMakeLists.txt), build only: optimisation levels change which
# warnings fire (gcc's -Wformat-truncation only at -O2, clang's -Wformat-nonliteral), so
# the two configurations `make build`/`make asan` use are not enough.
# Each configuration keeps its own directory, so a rerun only rebuilds what changed
# (a clean run takes ~2 minutes at -j2 on the 2-core test machine).
# Usage: scripts/build-matrix.sh            (JOBS=N, MATRIX_DIR=dir, COMPILERS="gcc clang")
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-2}
dir=${MATRIX_DIR:-build-matrix}
compilers=${COMPILERS:-gcc clang}
types="Debug Release RelWithDebInfo MinSizeRel"
failed=()
for cc in $compilers; do
  # Debian's clang-14 package (scripts/deps.sh) installs clang-14, not always clang.
  if [ "$cc" = clang ] && ! command -v clang >/dev/null && command -v clang-14 >/dev/null; then
    cc=clang-14
  fi
  if ! command -v "$cc" >/dev/null; then
    echo "build-matrix: $cc not installed" >&2
    failed+=("$cc (missing)")
    continue
  fi
  for type in $types; do
    out="$dir/$cc-$type"
    log="$out.log"
    mkdir -p "$dir"
    start=$(date +%s)
    if CC=$cc cmake -S . -B "$out" -DCMAKE_BUILD_TYPE="$type" >"$log" 2>&1 &&
       cmake --build "$out" -j "$jobs" >>"$log" 2>&1; then
      echo "build-matrix: $cc $type ok ($(( $(date +%s) - start )) s)"
    else
      echo "build-matrix: $cc $type FAILED (log: $log)" >&2
      grep -E "error|warning" "$log" | head -20 >&2 || true
      failed+=("$cc $type")
    fi
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "build-matrix: failed: ${failed[*]}" >&2
  exit 1
fi
echo "build-matrix: all $(( $(wc -w <<<"$compilers") * 4 )) configurations build with -Werror"
