#!/usr/bin/env bash
# User-space instructions per no-op, loop and raw io-uring crate, by callgrind.
#
#   benches/instructions/nops.sh [BATCH] [BATCHES]    # defaults 1024 64
set -euo pipefail
cd "$(dirname "$0")/../.."
BATCH=${1:-1024}
BATCHES=${2:-64}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
BIN=$(cargo bench --bench nop_instructions --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*nop_instructions[^"]*\)".*/\1/p' | tail -n 1)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for which in loop raw; do
  valgrind --tool=callgrind --toggle-collect='*measured*' \
    --callgrind-out-file="$WORK/$which.out" "$BIN" "$which" "$BATCH" "$BATCHES" 2>/dev/null
  IR=$(callgrind_annotate "$WORK/$which.out" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  echo "$which batch=$BATCH batches=$BATCHES instructions/no-op=$(awk "BEGIN{printf \"%.1f\", $IR/($BATCH*$BATCHES)}")"
  [ -n "${RINGVISOR_KEEP_CALLGRIND:-}" ] && cp "$WORK/$which.out" "$RINGVISOR_KEEP_CALLGRIND.$which.out"
done
