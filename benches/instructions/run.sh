#!/usr/bin/env bash
# User-space instructions per HTTP KV request, counted by callgrind: repeatable
# on a noisy shared machine, where CPU time is not. Used to measure per-request
# changes to http_kv and the layers under it.
#
#   benches/instructions/run.sh [BIN] [MIX] [DEPTH]
#     BIN    a server binary (default target/release/examples/http_kv; the
#            benchmark peers target/release/tokio_kv and monoio_kv work too)
#     MIX    get (90% GET) or put (90% PUT); default get
#     DEPTH  requests written at a time per connection; default 16
#   KEEP_DUMP=FILE keeps the callgrind dump (for callgrind_annotate)
#
# The server runs under valgrind with instrumentation off; 1,000 keys are
# written, then instrumentation covers 64 connections x 20 batches of DEPTH
# requests from load.py, and the total is divided by the requests sent.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/examples/http_kv}
MIX=${2:-get}
DEPTH=${3:-16}
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release --example http_kv
PORT=$((19500 + RANDOM % 300))
WORK=$(mktemp -d)
trap 'kill -9 "${VG:-0}" 2>/dev/null && wait "${VG:-0}" 2>/dev/null; rm -rf "$WORK"' EXIT
case "$BIN" in
  *tokio*|*monoio*) ARGS=() ;;
  *) ARGS=(--backend uring --sync never --data-dir "$WORK/data") ;;
esac
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out" \
  "$BIN" --addr "127.0.0.1:$PORT" "${ARGS[@]}" >"$WORK/out" 2>"$WORK/err" &
VG=$!
for _ in $(seq 1 150); do grep -q listening "$WORK/out" 2>/dev/null && break; sleep 0.2; done
python3 benches/instructions/load.py "$PORT" 16 20 16 put >/dev/null
callgrind_control -i on "$VG" >/dev/null 2>&1
N=$(python3 benches/instructions/load.py "$PORT" 64 20 "$DEPTH" "$MIX")
callgrind_control -d "$VG" >/dev/null 2>&1
callgrind_control -i off "$VG" >/dev/null 2>&1 || true
sleep 0.5
DUMP=$(ls "$WORK"/cg.out.* 2>/dev/null | head -n 1)
[ -n "${KEEP_DUMP:-}" ] && cp "${DUMP:-$WORK/cg.out}" "$KEEP_DUMP"
IR=$(callgrind_annotate "${DUMP:-$WORK/cg.out}" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
echo "$(basename "$BIN") mix=$MIX depth=$DEPTH requests=$N instructions/request=$((IR / N))"
