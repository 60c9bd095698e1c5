#!/usr/bin/env bash
# The syscall-batching benchmark (issue 8), in one command:
#
#   benches/run.sh            # full run, ~20-30 minutes on 2 cores
#   benches/run.sh --short    # (or RINGVISOR_BENCH_SHORT=1) checks the script, ~2 minutes
#
# Builds in release mode, installs wrk if missing, and runs every server on the
# same workload, servers interleaved within each repetition:
#   - HTTP KV: ringvisor `http_kv` on io_uring and poll (--sync never; and
#     --sync always for the PUT-heavy mix), the tokio and monoio peers
#     (benches/peers), under wrk: request-response and pipelined (16 per
#     write), GET-heavy and PUT-heavy, 1/16/64/256 connections;
#   - echo: ringvisor's `echo` example on io_uring and poll, tokio and monoio
#     echo servers, under the echo load client (64-byte messages).
# The server is pinned to CPU 0, the load generator to CPU 1. Per point:
# requests/s, p50/p99, server CPU µs/request (/proc/PID/stat), syscalls/request
# (perf stat -e raw_syscalls:sys_enter -p PID, or the loop's own counters,
# labelled, where perf is unavailable), requests per kernel entry for ringvisor
# and the load generator's CPU. Writes benches/results/RESULTS.md, raw runs
# (runs.csv) and SVG plots.
#
# Environment: RINGVISOR_BENCH_SHORT=1, RINGVISOR_BENCH_DURATION_S (per point),
# RINGVISOR_BENCH_REPS, RINGVISOR_BENCH_CONNS ("1 16 64 256"),
# RINGVISOR_BENCH_SUITES ("echo kv"), RINGVISOR_BENCH_MICRO=0 (skip cargo
# bench), RINGVISOR_BENCH_PROFILE=0 (skip the perf record profile),
# RINGVISOR_BENCH_OUT (default benches/results), RINGVISOR_BENCH_OTHER_MAX_PCT
# (default 10: a point during which other processes took more than this share
# of the server's core is measured again, up to RINGVISOR_BENCH_TRIES times in
# all, default 3; the last try is kept whatever its disturbance, and the
# report's "other load" column shows it), RINGVISOR_BENCH_REPORT_ONLY=1
# (keep the raw runs.csv already in OUT: only the micro-benchmarks and the report).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
COMMAND="benches/run.sh $*"
SHORT=${RINGVISOR_BENCH_SHORT:-0}
for arg in "$@"; do
  case "$arg" in
    --short) SHORT=1 ;;
    *) echo "usage: benches/run.sh [--short]" >&2; exit 2 ;;
  esac
done
if [ "$SHORT" = 1 ]; then
  DURATION_S=${RINGVISOR_BENCH_DURATION_S:-1}
  REPS=${RINGVISOR_BENCH_REPS:-1}
  CONNS=${RINGVISOR_BENCH_CONNS:-"1 64"}
  MICRO=${RINGVISOR_BENCH_MICRO:-0}
  PROFILE=${RINGVISOR_BENCH_PROFILE:-0}
else
  DURATION_S=${RINGVISOR_BENCH_DURATION_S:-4}
  REPS=${RINGVISOR_BENCH_REPS:-3}
  CONNS=${RINGVISOR_BENCH_CONNS:-"1 16 64 256"}
  MICRO=${RINGVISOR_BENCH_MICRO:-1}
  PROFILE=${RINGVISOR_BENCH_PROFILE:-1}
fi
SUITES=${RINGVISOR_BENCH_SUITES:-"echo kv"}
OTHER_MAX_PCT=${RINGVISOR_BENCH_OTHER_MAX_PCT:-10}
TRIES=${RINGVISOR_BENCH_TRIES:-3}
OUT=${RINGVISOR_BENCH_OUT:-$ROOT/benches/results}
KEYS=1000
VALUE_BYTES=64
ECHO_BYTES=64
SERVER_CPU=0
LOAD_CPU=1
TICKS_PER_S=$(getconf CLK_TCK)
REL=$ROOT/target/release
WORK=$(mktemp -d /tmp/ringvisor-bench.XXXXXX)
RUNS=$OUT/runs.csv
SERVER_PID=""

log() { printf '[run.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -9 "$SERVER_PID" 2>/dev/null || true; fi
  local pid
  for pid in "${KV_PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- setup

install_tools() {
  if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get update && apt-get install -y wrk
  fi
  for tool in taskset curl; do
    command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
  done
  if command -v perf >/dev/null &&
    perf stat -e raw_syscalls:sys_enter -x, -o /dev/null -- true 2>/dev/null; then
    PERF=1
  else
    PERF=0
    log "perf stat -e raw_syscalls:sys_enter is unavailable: syscalls/request fall back to the loop's own counters (ringvisor only), labelled 'loop'"
  fi
}

HAVE_HTTP_KV=0
build() {
  log "building (release)"
  cargo build --release --examples
  cargo build --release -p ringvisor-peers
  if [ -x "$REL/examples/http_kv" ]; then HAVE_HTTP_KV=1; fi
  if [ "$HAVE_HTTP_KV" = 0 ]; then
    log "SKIPPING ringvisor http_kv: examples/http_kv is not in this tree yet (the KV table has only the peers)"
  fi
}

# ---------------------------------------------------------------- servers

# start_server NAME ARGS...: starts a server pinned to the server CPU, waits
# for its "listening on ADDR" line; sets SERVER_PID and SERVER_ADDR.
start_server() {
  local name=$1; shift
  : >"$WORK/$name.out"
  taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  SERVER_PID=$!
  local i
  for i in $(seq 1 200); do
    SERVER_ADDR=$(sed -n 's/^listening on \([^ ]*\) .*/\1/p;T;q' "$WORK/$name.out")
    if [ -n "$SERVER_ADDR" ]; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.05
  done
  log "server $name did not start:"; cat "$WORK/$name.err" >&2
  exit 1
}

# SIGTERM, not SIGINT: a non-interactive shell starts background jobs with
# SIGINT ignored. ringvisor's servers print their counters on SIGTERM too.
stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# The command line of each server; ringvisor's KV servers get a fresh data dir.
server_cmd() {
  case "$1" in
    echo:ringvisor-uring) echo "$REL/examples/echo --addr 127.0.0.1:0 --backend uring" ;;
    echo:ringvisor-poll) echo "$REL/examples/echo --addr 127.0.0.1:0 --backend poll" ;;
    echo:tokio) echo "$REL/tokio_echo --addr 127.0.0.1:0" ;;
    echo:monoio) echo "$REL/monoio_echo --addr 127.0.0.1:0" ;;
    kv:ringvisor-uring) kv_cmd uring never ;;
    kv:ringvisor-poll) kv_cmd poll never ;;
    kv:ringvisor-uring-sync) kv_cmd uring always ;;
    kv:ringvisor-poll-sync) kv_cmd poll always ;;
    kv:tokio) echo "$REL/tokio_kv --addr 127.0.0.1:0" ;;
    kv:monoio) echo "$REL/monoio_kv --addr 127.0.0.1:0" ;;
  esac
}

kv_cmd() {
  local dir
  dir=$(mktemp -d "$WORK/data.XXXXXX")
  local data=""
  if "$REL/examples/http_kv" --help 2>/dev/null | grep -q -- --data-dir; then data="--data-dir $dir"; fi
  echo "$REL/examples/http_kv --addr 127.0.0.1:0 --backend $1 --sync $2 $data"
}

# ---------------------------------------------------------------- measuring

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Busy ticks of the server's CPU (user, nice, system, steal; not irq/softirq)
# and the wall clock, to tell how much else ran on that core during a point.
core_mark() { CORE_BUSY0=$(awk -v c="cpu$SERVER_CPU" '$1 == c {print $2 + $3 + $4 + $9}' /proc/stat); CORE_T0=$(date +%s.%N); }
# other_load SERVER_TICKS: percent of the server's core used by anything but
# the server: other processes on this shared machine (softirq time excluded).
other_load() {
  local busy
  busy=$(awk -v c="cpu$SERVER_CPU" '$1 == c {print $2 + $3 + $4 + $9}' /proc/stat)
  awk -v b0="$CORE_BUSY0" -v b1="$busy" -v s="$1" -v t0="$CORE_T0" -v t1="$(date +%s.%N)" -v hz="$TICKS_PER_S" \
    'BEGIN { o = (b1 - b0 - s) / hz / (t1 - t0); if (o < 0) o = 0; printf "%.0f", 100 * o }'
}

perf_start() {
  PERF_PID=""
  [ "$PERF" = 1 ] || return 0
  perf stat -e raw_syscalls:sys_enter -x, -o "$WORK/perf.out" -p "$SERVER_PID" &
  PERF_PID=$!
  sleep 0.3 # let perf attach before the load starts
}

# perf_stop: sets SYSCALLS to the count (empty without perf). Not run in a
# subshell: it must wait for its own perf child.
perf_stop() {
  SYSCALLS=""
  [ -n "$PERF_PID" ] || return 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  SYSCALLS=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$WORK/perf.out")
}

# ringvisor http_kv: a counter from /metrics, summed over its labels
# (ringvisor_loop_syscalls_total: the loop's kernel entries).
kv_metric() {
  curl -s "http://$SERVER_ADDR/metrics" 2>/dev/null |
    awk -v name="$1" '$0 !~ /^#/ && ($1 == name || index($1, name "{") == 1) {s += $NF; n++} END {if (n) printf "%d\n", s}'
}

# fdatasyncs made: the shared log's own count (one fdatasync carries every
# shard's entries of its batch, so the per-shard counts add up to more), or
# with --log per-shard the sum over the shards' logs.
kv_fdatasyncs() {
  local n
  n=$(kv_metric ringvisor_log_fdatasyncs_total)
  [ -n "$n" ] || n=$(kv_metric ringvisor_shard_fsyncs_total)
  echo "$n"
}

ratio() { awk -v a="$1" -v b="$2" -v m="${3:-1}" 'BEGIN { if (a != "" && b != "" && b > 0) printf "%.4f", m * a / b }'; }

# measure POINT_FN ARGS...: runs a point; while the point reports that other
# processes disturbed the server's core (POINT_DISTURBED=1, nothing emitted),
# runs it again, up to TRIES times; the last try always emits.
TRY=1
measure() {
  for TRY in $(seq 1 "$TRIES"); do
    POINT_DISTURBED=0
    "$@"
    [ "$POINT_DISTURBED" = 1 ] || break
  done
  TRY=1
}

# disturbed OTHER_PCT WHAT: true (and logs) if this try should be redone.
disturbed() {
  if [ "$1" -gt "$OTHER_MAX_PCT" ] && [ "$TRY" -lt "$TRIES" ]; then
    log "$2: other load on CPU $SERVER_CPU was $1% (> $OTHER_MAX_PCT%): measuring again (try $((TRY + 1)) of $TRIES)"
    POINT_DISTURBED=1
    return 0
  fi
  return 1
}

# emit SUITE SERVER SHAPE MIX CONNS REP RPS P50 P99 CPU_US SYS SRC PER_ENTRY LOAD_CPU ERRORS WRITES_PER_FSYNC OTHER_LOAD
emit() { (IFS=,; echo "$*") >>"$RUNS"; }

# One echo point: a fresh server, the load client for DURATION_S.
echo_point() {
  local server=$1 conns=$2 rep=$3
  # shellcheck disable=SC2046
  start_server "$server" $(server_cmd "echo:$server")
  local t0 t1 syscalls
  t0=$(cpu_ticks "$SERVER_PID")
  perf_start
  core_mark
  taskset -c "$LOAD_CPU" "$REL/echo_load" --addr "$SERVER_ADDR" --connections "$conns" \
    --size-bytes "$ECHO_BYTES" --duration-ms $((DURATION_S * 1000)) --warmup-ms 500 >"$WORK/load.out"
  t1=$(cpu_ticks "$SERVER_PID")
  local other
  other=$(other_load $((t1 - t0)))
  perf_stop
  syscalls=$SYSCALLS
  stop_server
  local kv total rps p50 p99 load_cpu errors entries src=perf per_entry
  kv=$(cat "$WORK/load.out")
  get() { echo "$kv" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  total=$(get total_msgs); rps=$(get msgs_per_s); p50=$(get p50_us); p99=$(get p99_us)
  load_cpu=$(get client_cpu_pct); errors=$(get errors)
  entries=$(sed -n 's/.*, syscalls: \([0-9]*\).*/\1/p' "$WORK/$server.err" | tail -n 1 || true)
  per_entry=""
  if [ "${server#ringvisor}" != "$server" ]; then
    per_entry=$(ratio "$total" "$entries")
    if [ "$PERF" = 0 ]; then syscalls=$entries; src=loop; fi
  fi
  [ "$PERF" = 0 ] && [ "${server#ringvisor}" = "$server" ] && src=""
  disturbed "$other" "echo $server conns=$conns rep=$rep" && return 0
  emit echo "$server" rr echo "$conns" "$rep" "$rps" "$p50" "$p99" \
    "$(ratio $((t1 - t0)) "$total" $((1000000 / TICKS_PER_S)))" "$(ratio "$syscalls" "$total")" \
    "$src" "$per_entry" "$load_cpu" "$errors" "" "$other"
  log "echo $server conns=$conns rep=$rep: $rps msg/s, p99 ${p99}us, syscalls/msg $(ratio "$syscalls" "$total"), client cpu ${load_cpu}%, other load on CPU $SERVER_CPU ${other}%"
}

run_wrk() { # conns duration_s mix depth
  local start end
  start=$(date +%s.%N)
  { TIMEFORMAT='%3U %3S'; time taskset -c "$LOAD_CPU" wrk -t1 -c "$1" -d "${2}s" --timeout 5s \
      -s "$ROOT/benches/wrk/kv.lua" "http://$SERVER_ADDR" -- "$3" "$4" "$KEYS" "$VALUE_BYTES" \
      >"$WORK/wrk.out" 2>"$WORK/wrk.err"; } 2>"$WORK/wrk.time"
  end=$(date +%s.%N)
  WRK_CPU_PCT=$(awk -v s="$start" -v e="$end" '{printf "%.1f", 100 * ($1 + $2) / (e - s)}' "$WORK/wrk.time")
}

# One KV point on the running server.
kv_point() {
  local server=$1 shape=$2 mix=$3 conns=$4 rep=$5
  local depth=1
  [ "$shape" = pipe16 ] && depth=16
  local ringvisor=0
  [ "${server#ringvisor}" != "$server" ] && ringvisor=1
  local t0 t1 e0="" e1="" f0="" f1="" syscalls
  if [ "$ringvisor" = 1 ]; then e0=$(kv_metric ringvisor_loop_syscalls_total); f0=$(kv_fdatasyncs); fi
  t0=$(cpu_ticks "$SERVER_PID")
  perf_start
  core_mark
  run_wrk "$conns" "$DURATION_S" "$mix" "$depth"
  t1=$(cpu_ticks "$SERVER_PID")
  local other
  other=$(other_load $((t1 - t0)))
  perf_stop
  syscalls=$SYSCALLS
  if [ "$ringvisor" = 1 ]; then e1=$(kv_metric ringvisor_loop_syscalls_total); f1=$(kv_fdatasyncs); fi
  local line requests p50 p99 errors entries="" src=perf per_entry="" wpf=""
  line=$(grep '^RESULT' "$WORK/wrk.out" || true)
  if [ -z "$line" ]; then log "wrk failed: $(cat "$WORK/wrk.err")"; return 0; fi
  get() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  requests=$(get requests); p50=$(get p50_us); p99=$(get p99_us)
  # wrk 4.1's percentiles are not usable under pipelining (one sample per
  # batch, and the upper ones mostly read 0): leave them out.
  if [ "$depth" -gt 1 ]; then p50=""; p99=""; fi
  errors=$(( $(get errors) + $(get status_errors) ))
  if [ -n "$e0" ] && [ -n "$e1" ]; then entries=$((e1 - e0)); per_entry=$(ratio "$requests" "$entries"); fi
  if [ -n "$f0" ] && [ -n "$f1" ] && [ "$mix" = put ] && [ $((f1 - f0)) -gt 0 ]; then
    wpf=$(ratio "$requests" $((f1 - f0)) 0.9) # 90% of the PUT-heavy mix are PUTs
  fi
  if [ "$PERF" = 0 ]; then syscalls=$entries; src=$([ "$ringvisor" = 1 ] && echo loop || echo ""); fi
  disturbed "$other" "kv $server $shape $mix conns=$conns rep=$rep" && return 0
  emit kv "$server" "$shape" "$mix" "$conns" "$rep" \
    "$(ratio "$requests" "$(get duration_us)" 1000000)" "$p50" "$p99" \
    "$(ratio $((t1 - t0)) "$requests" $((1000000 / TICKS_PER_S)))" "$(ratio "$syscalls" "$requests")" \
    "$src" "$per_entry" "$WRK_CPU_PCT" "$errors" "$wpf" "$other"
  log "kv $server $shape $mix conns=$conns rep=$rep: $(ratio "$requests" "$(get duration_us)" 1000000) req/s, p99 ${p99}us, syscalls/req $(ratio "$syscalls" "$requests"), wrk cpu ${WRK_CPU_PCT}%, other load on CPU $SERVER_CPU ${other}%"
}

kv_servers() {
  local s="tokio monoio"
  if [ "$HAVE_HTTP_KV" = 1 ]; then s="ringvisor-uring ringvisor-poll ringvisor-uring-sync ringvisor-poll-sync $s"; fi
  echo "$s"
}

# Every KV server of a repetition runs at once (idle ones sleep in the
# kernel), so each point is measured on every server back to back and a noisy
# phase of the shared machine hits them alike.
declare -A KV_PID KV_ADDR
run_kv() {
  local rep server shape mix conns
  for rep in $(seq 1 "$REPS"); do
    for server in $(kv_servers); do
      # shellcheck disable=SC2046
      start_server "$server" $(server_cmd "kv:$server")
      run_wrk 16 2 preload 1 # every key exists before GETs are measured
      KV_PID[$server]=$SERVER_PID
      KV_ADDR[$server]=$SERVER_ADDR
    done
    for shape in rr pipe16; do
      for mix in get put; do
        for conns in $CONNS; do
          for server in $(kv_servers); do
            case "$server" in *-sync) [ "$mix" = put ] || continue ;; esac
            SERVER_PID=${KV_PID[$server]}
            SERVER_ADDR=${KV_ADDR[$server]}
            measure kv_point "$server" "$shape" "$mix" "$conns" "$rep"
          done
        done
      done
    done
    for server in $(kv_servers); do
      SERVER_PID=${KV_PID[$server]}
      stop_server
      unset "KV_PID[$server]"
    done
  done
}

run_echo() {
  local rep conns server
  for rep in $(seq 1 "$REPS"); do
    for conns in $CONNS; do
      for server in ringvisor-uring ringvisor-poll tokio monoio; do
        measure echo_point "$server" "$conns" "$rep"
      done
    done
  done
}

# criterion's point estimates (the middle of each [low mid high]) as a table.
criterion_table() {
  printf '\n## Criterion estimates (cargo bench)\n\n| bench | time | throughput |\n|---|---:|---:|\n'
  awk '/%/ { next }
       /time:   \[/ { name = ($1 == "time:") ? last : $1; t = $(NF-3) " " $(NF-2) }
       /thrpt:  \[/ { printf "| %s | %s | %s %s |\n", name, t, $(NF-3), $(NF-2); name = "" }
       !/^ / && NF == 1 { last = $1 }' "$1"
}

# A perf record profile of a server at 64 connections: where the time goes.
profile() { # suite server [depth: 1 request-response (default), 16 pipelined]
  local suite=$1 server=$2 depth=${3:-1}
  # shellcheck disable=SC2046
  start_server "$server" $(server_cmd "$suite:$server")
  [ "$suite" = kv ] && run_wrk 16 1 preload 1
  perf record -q -g -o "$WORK/perf.data" -p "$SERVER_PID" -- sleep "$DURATION_S" 2>/dev/null &
  local rec=$!
  if [ "$suite" = kv ]; then
    run_wrk 64 "$DURATION_S" get "$depth"
  else
    taskset -c "$LOAD_CPU" "$REL/echo_load" --addr "$SERVER_ADDR" --connections 64 \
      --duration-ms $((DURATION_S * 1000)) --warmup-ms 0 >/dev/null
  fi
  wait "$rec" || true
  stop_server
  local f="$OUT/profile-$suite-$server.txt" shape="request-response"
  if [ "$depth" != 1 ]; then
    f="$OUT/profile-$suite-$server-pipe$depth.txt"
    shape="pipelined, $depth per write"
  fi
  {
    echo "# perf record -g -p PID, $suite $server, 64 connections, $shape, ${DURATION_S}s"
    echo "## share by binary (kernel = [kernel.kallsyms])"
    perf report -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' || true
    echo "## share by part (benches/profile_parts.awk; a sample counts in the function it landed in after inlining)"
    perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null |
      awk -f "$ROOT/benches/profile_parts.awk" | sort -rn || true
    echo "## top symbols"
    perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | sed -n '1,40p' || true
  } >"$f"
  log "profile written to $f"
}

# ---------------------------------------------------------------- main

main() {
  install_tools
  build
  mkdir -p "$OUT"
  if [ "${RINGVISOR_BENCH_REPORT_ONLY:-0}" = 1 ]; then
    [ -f "$RUNS" ] || { log "no $RUNS to report on"; exit 1; }
    SUITES=""
    PROFILE=0
  else
    echo "suite,server,shape,mix,conns,rep,rps,p50_us,p99_us,cpu_us_per_req,syscalls_per_req,syscalls_source,req_per_entry,load_cpu_pct,errors,writes_per_fsync,other_cpu0_pct" >"$RUNS"
  fi
  local started=$SECONDS
  LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
  local suite
  for suite in $SUITES; do
    case "$suite" in
      echo) run_echo ;;
      kv) run_kv ;;
      *) log "unknown suite $suite"; exit 2 ;;
    esac
  done
  if [ "$PROFILE" = 1 ] && [ "$PERF" = 1 ]; then
    profile echo ringvisor-uring
    [ "$HAVE_HTTP_KV" = 1 ] && profile kv ringvisor-uring
    [ "$HAVE_HTTP_KV" = 1 ] && profile kv ringvisor-uring 16
  fi
  local appendix="$WORK/appendix.md"
  : >"$appendix"
  if [ "$MICRO" = 1 ]; then
    log "micro-benchmarks: cargo bench (every criterion bench of the root package)"
    RINGVISOR_BENCH_SUMMARY="$OUT/micro.md" cargo bench >"$OUT/criterion.txt" 2>&1
    cat "$OUT/micro.md" >>"$appendix"
    criterion_table "$OUT/criterion.txt" >>"$appendix"
  fi
  if [ "${RINGVISOR_BENCH_REPORT_ONLY:-0}" = 1 ] && [ -f "$OUT/RESULTS.md" ]; then
    # Keep the load runs' header, say what was redone.
    sed -n '1,/^## Results/p' "$OUT/RESULTS.md" | sed '$d' >"$WORK/preamble.md"
    echo "- report regenerated $(date -u +%Y-%m-%dT%H:%M:%SZ) from that run's runs.csv; micro-benchmarks re-run then (git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown))" >>"$WORK/preamble.md"
  else
    write_preamble "$((SECONDS - started))" >"$WORK/preamble.md"
  fi
  "$REL/report" --runs "$RUNS" --out-dir "$OUT" --preamble "$WORK/preamble.md" --appendix "$appendix"
}

write_preamble() {
  local kv_note="ringvisor http_kv: measured"
  [ "$HAVE_HTTP_KV" = 1 ] || kv_note="ringvisor http_kv: **skipped** (examples/http_kv not in this tree yet); the KV tables show only the peers"
  cat <<EOF
# Benchmark results

- command: \`$COMMAND\` (short=$SHORT, ${DURATION_S}s per point, $REPS repetitions, connections: $CONNS, suites: $SUITES)
- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), took $1 s; git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)
- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
- kernel: $(uname -sr)
- server pinned to CPU $SERVER_CPU, load generator (wrk -t1 / echo_load) to CPU $LOAD_CPU
- syscalls counted with: $([ "$PERF" = 1 ] && echo "perf stat -e raw_syscalls:sys_enter -p PID (all the server's threads)" || echo "the loop's own counters (perf unavailable); peers not counted")
- $kv_note (default 8 shards, data in a fresh temporary directory)
- KV: $KEYS keys (all written before measuring), ${VALUE_BYTES}-byte values; GET-heavy = 90% GET, PUT-heavy = 90% PUT; wrk 4.1's latency percentiles are broken under pipelining (it reports 0), so pipelined rows have no p50/p99
- echo: ${ECHO_BYTES}-byte messages, one in flight per connection, 0.5 s warm-up; per-request figures divide by every message of the run
- a "load gen CPU" near 100% means the load generator, not the server, limits req/s
- "other load on CPU $SERVER_CPU": busy time of the server's core not spent in the server (other processes on this shared machine; softirq time excluded); high values mean the point was disturbed; a point above $OTHER_MAX_PCT% was measured again (up to $TRIES tries, the last kept)
- load average at the start: $LOAD_AT_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)
EOF
}

main
