#!/usr/bin/env bash
# Project checks that need no build: banned functions and clang-format cleanliness.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find src tests -name '*.[ch]')

# Unbounded or unchecked calls (curl's banned list, in spirit): use snprintf, strbuf,
# parse_u64 and the JSON library instead.
if banned=$(grep -nE '\b(sprintf|vsprintf|strcpy|strcat|gets|atoi|atol|atoll|atof)[[:space:]]*\(' $files); then
  echo "lint: banned functions:" >&2
  echo "$banned" >&2
  status=1
fi

if command -v clang-format >/dev/null; then
  unformatted=$(for f in $files; do clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
  if [ -n "$unformatted" ]; then
    echo "lint: not clang-format clean (run 'make format'):" >&2
    echo "$unformatted" >&2
    status=1
  fi
fi
exit $status
