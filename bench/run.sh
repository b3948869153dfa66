#!/usr/bin/env bash
# bench/run.sh -- corral against llama-server, same model, same machine.
#
# Builds the needed CMake targets, makes the synthetic bench models with
# corral-mkmodel (bench/out/, kept between runs), then for every scenario
# starts one server at a time (llama-server, then corral), waits for
# /health == 200, drives it with corral-loadgen, and stops it. The servers
# never run at the same time. Results: a markdown report on stdout and in
# bench/out/latest.md; raw loadgen JSON, wrk output, server logs and the s7
# sweep data / plot in bench/out/run-*/ (plot also bench/out/latest-throughput.*).
#
# Usage: bench/run.sh [options]
#   --big            also run the 1.1B Q4_0 model (slow: a few more minutes)
#   --extended       also run the extended scenarios: shared ~1000-token
#                    system prompt (s3), 10-turn chats (s4), three models with
#                    room for two (s5), GET /health and /v1/models under wrk
#                    (s6), the 1/2/4/8-stream concurrency sweep (s7),
#                    four 10-turn chats sharing two slots (s8) and 1500-token
#                    prompts joining 6 generating streams (s9)
#   --matrix         the equal-slot matrix: 1, 4 and 8 streams x 64 and 256
#                    tokens out, 128-token prompts, both servers with
#                    --parallel = streams (corral also --max-concurrent), one
#                    summary table of the ratios (tok/s, TTFT p50, ITL p99);
#                    with --big also on the 1.1B model (m-cN-oT scenarios)
#   --quick          fewer requests per scenario (smoke test, noisy figures)
#   --only S         run only scenario S (s1 .. s9, or one sweep level such as
#                    s7-c4); repeatable; an extended scenario named here runs
#                    without --extended
#   --plot FMT       format of the s7 plot: svg (default) or png
#   --no-build       do not run cmake; use the binaries that are there
#   --no-corral      skip corral          --no-llama   skip llama-server
#   --no-ceiling     skip llama-bench / llama-batched-bench
#   --threads N      threads for both servers and the benches (default: nproc)
#   --repeat N       run each server N times per scenario, alternating which
#                    goes first; the report keeps each server's best run
#   --wait-quiet S   before each server run, wait up to S seconds for the
#                    1-minute load average to drop below QUIET_LOAD (1.0)
#   -h, --help
#
# Environment:
#   BUILD_DIR            CMake build dir (default: <repo>/build)
#   CORRAL_BIN           corral binary (default: $BUILD_DIR/corral)
#   CORRAL_ARGS          extra args appended to `corral serve ...`
#   LLAMA_SERVER_BIN     llama-server binary (default: found under $BUILD_DIR)
#   LLAMA_SERVER_ARGS    extra args appended to llama-server's command line
#   LOADGEN_BIN          corral-loadgen binary; LOADGEN_ARGS extra args for it
#   MKMODEL_BIN          corral-mkmodel binary
#   BENCH_MODEL          use this GGUF instead of generating the 134M model
#                        (s5 always uses its own three generated 134M models)
#   BENCH_ENDPOINT       completions (default) or chat, for scenarios 1 and 2
#   HEALTH_TIMEOUT       seconds to wait for /health (default 180)
#   CEILING_BUILD_TIMEOUT  seconds allowed to build llama-bench (default 300)
#   QUIET_LOAD           load average counted as quiet by --wait-quiet
#   WRK_BIN              wrk for s6 (default: /usr/bin/wrk, else wrk on PATH)
#   WRK_THREADS          wrk -t (default 2)    WRK_CONNECTIONS  wrk -c (256)
#   WRK_DURATION         seconds per endpoint (default 10; --quick: 3)
#   WRK_ARGS             extra wrk args (e.g. "--timeout 5s"; default timeout 2s)
#   SWEEP_LEVELS         s7 concurrency levels (default "1 2 4 8")
#   GNUPLOT_BIN          gnuplot for the s7 plot (default: gnuplot on PATH)

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
THREADS=$(nproc 2>/dev/null || echo 2)
BIG=0 EXTENDED=0 MATRIX=0 QUICK=0 DO_BUILD=1 DO_CORRAL=1 DO_LLAMA=1 DO_CEILING=1
ONLY=()
REPEAT=1 WAIT_QUIET=0
QUIET_LOAD=${QUIET_LOAD:-1.0}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-180}
CEILING_BUILD_TIMEOUT=${CEILING_BUILD_TIMEOUT:-300}
ENDPOINT=${BENCH_ENDPOINT:-completions}
PLOT_FMT=svg
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-256}
SWEEP_LEVELS=${SWEEP_LEVELS:-1 2 4 8}

while [ $# -gt 0 ]; do
    case "$1" in
        --big) BIG=1 ;;
        --extended) EXTENDED=1 ;;
        --matrix) MATRIX=1 ;;
        --quick) QUICK=1 ;;
        --only) shift; ONLY+=("${1:?--only needs a scenario}") ;;
        --no-build) DO_BUILD=0 ;;
        --no-corral) DO_CORRAL=0 ;;
        --no-llama) DO_LLAMA=0 ;;
        --no-ceiling) DO_CEILING=0 ;;
        --threads) shift; THREADS=${1:?--threads needs a number} ;;
        --repeat) shift; REPEAT=${1:?--repeat needs a number} ;;
        --wait-quiet) shift; WAIT_QUIET=${1:?--wait-quiet needs seconds} ;;
        --plot) shift; PLOT_FMT=${1:?--plot needs svg or png} ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$ENDPOINT" in completions|chat) ;; *) echo "run.sh: BENCH_ENDPOINT must be completions or chat" >&2; exit 2 ;; esac
case "$PLOT_FMT" in svg|png) ;; *) echo "run.sh: --plot must be svg or png" >&2; exit 2 ;; esac
WRK_DURATION=${WRK_DURATION:-$([ $QUICK -eq 1 ] && echo 3 || echo 10)}

log() { printf '[bench] %s\n' "$*" >&2; }

# ------------------------------------------------------------------ build

find_bin() { # name -> first existing executable among the usual places
    local n=$1 d
    for d in "$BUILD_DIR" "$BUILD_DIR/bin" "$BUILD_DIR/llama.cpp/bin"; do
        if [ -x "$d/$n" ]; then echo "$d/$n"; return 0; fi
    done
    return 1
}

build_target() { # target [timeout]: 0 if built
    local t=$1 to=${2:-0} rc
    log "cmake --build $BUILD_DIR --target $t"
    if [ "$to" -gt 0 ]; then
        timeout "$to" cmake --build "$BUILD_DIR" --target "$t" -j "$THREADS" >"$RUN_DIR/build-$t.log" 2>&1
    else
        cmake --build "$BUILD_DIR" --target "$t" -j "$THREADS" >"$RUN_DIR/build-$t.log" 2>&1
    fi
    rc=$?
    [ $rc -ne 0 ] && log "target $t did not build (rc $rc; see $RUN_DIR/build-$t.log)"
    return $rc
}

mkdir -p "$OUT"
RUN_DIR=$OUT/run-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN_DIR"
NOTES=() # lines for the report's "notes" section

if [ $DO_BUILD -eq 1 ]; then
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        log "configuring $BUILD_DIR"
        cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >"$RUN_DIR/configure.log" 2>&1 ||
            { log "cmake configure failed (see $RUN_DIR/configure.log)"; exit 1; }
    fi
    # One target at a time so that a broken corral does not stop the rest.
    for t in corral-loadgen corral-mkmodel llama-server; do
        build_target "$t" || NOTES+=("target $t failed to build")
    done
    if [ $DO_CORRAL -eq 1 ] && [ -z "${CORRAL_BIN:-}" ]; then
        build_target corral || NOTES+=("target corral failed to build; corral not measured")
    fi
fi

CORRAL_BIN=${CORRAL_BIN:-$(find_bin corral || true)}
LLAMA_SERVER_BIN=${LLAMA_SERVER_BIN:-$(find_bin llama-server || true)}
LOADGEN_BIN=${LOADGEN_BIN:-$(find_bin corral-loadgen || true)}
MKMODEL_BIN=${MKMODEL_BIN:-$(find_bin corral-mkmodel || true)}

if [ -z "$LOADGEN_BIN" ] || [ ! -x "$LOADGEN_BIN" ]; then
    log "no corral-loadgen binary; cannot run (set LOADGEN_BIN or build target corral-loadgen)"
    exit 1
fi
if [ -z "$CORRAL_BIN" ] || [ ! -x "$CORRAL_BIN" ]; then
    [ $DO_CORRAL -eq 1 ] && NOTES+=("no corral binary; corral not measured")
    DO_CORRAL=0
fi
if [ -z "$LLAMA_SERVER_BIN" ] || [ ! -x "$LLAMA_SERVER_BIN" ]; then
    [ $DO_LLAMA -eq 1 ] && NOTES+=("no llama-server binary; llama-server not measured")
    DO_LLAMA=0
fi

# ------------------------------------------------------------------ models

# name|mkmodel args
MODEL_SPECS=("134m|--dim 768 --layers 12 --ffn 2048 --heads 12 --type q8_0")
[ $BIG -eq 1 ] && MODEL_SPECS+=("1.1b|--dim 2048 --layers 16 --ffn 8192 --heads 32 --kv-heads 8 --type q4_0")

model_path() { echo "$OUT/bench-$1.gguf"; }

make_model() { # name args...: 0 if the GGUF exists afterwards
    local name=$1; shift
    local path; path=$(model_path "$name")
    if [ "$name" = 134m ] && [ -n "${BENCH_MODEL:-}" ]; then
        [ -f "$BENCH_MODEL" ] && return 0
        log "BENCH_MODEL=$BENCH_MODEL does not exist"; return 1
    fi
    [ -s "$path" ] && return 0
    if [ -z "$MKMODEL_BIN" ] || [ ! -x "$MKMODEL_BIN" ]; then
        log "no corral-mkmodel binary; cannot make $path"; return 1
    fi
    log "generating $path"
    if ! "$MKMODEL_BIN" "$@" --out "$path.tmp" >"$RUN_DIR/mkmodel-$name.log" 2>&1; then
        log "corral-mkmodel failed (see $RUN_DIR/mkmodel-$name.log)"; rm -f "$path.tmp"; return 1
    fi
    mv "$path.tmp" "$path"
}

# s5: three 134M-shape models with different seeds, served from one
# directory (ids a, b, c = file stems) under a memory budget for two.
S5_NAME=3x134m
S5_DIR=$OUT/s5-models
S5_SPEC="--dim 768 --layers 12 --ffn 2048 --heads 12 --type q8_0"

model_file() { # name -> path actually used (a directory for s5)
    if [ "$1" = "$S5_NAME" ]; then echo "$S5_DIR"; return; fi
    if [ "$1" = 134m ] && [ -n "${BENCH_MODEL:-}" ]; then echo "$BENCH_MODEL"; else model_path "$1"; fi
}

make_s5_models() { # 0 if $S5_DIR holds a.gguf, b.gguf, c.gguf afterwards
    local n seed=101
    mkdir -p "$S5_DIR" || return 1
    for n in a b c; do
        # shellcheck disable=SC2086
        make_model "134m-$n" $S5_SPEC --seed "$seed" || return 1
        ln -sfn "../bench-134m-$n.gguf" "$S5_DIR/$n.gguf" || return 1
        seed=$((seed + 1))
    done
}

MODELS=()
for spec in "${MODEL_SPECS[@]}"; do
    name=${spec%%|*}; args=${spec#*|}
    # shellcheck disable=SC2086
    if make_model "$name" $args; then MODELS+=("$name"); else NOTES+=("model $name unavailable; skipped"); fi
done
if [ ${#MODELS[@]} -eq 0 ]; then
    log "no model to benchmark"; exit 1
fi

# ------------------------------------------------------------------ servers

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' && return
    fi
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo $p; return; }
    done
}

SERVER_PID=""
stop_server() {
    [ -z "$SERVER_PID" ] && return 0
    # llama-server in router mode runs one child process per loaded model; it
    # stops them itself on SIGTERM, but make sure none outlives the run.
    local kids c
    kids=$(pgrep -P "$SERVER_PID" 2>/dev/null | tr '\n' ' ')
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server $SERVER_PID ignored SIGTERM; killing"
            kill -KILL "$SERVER_PID" 2>/dev/null
        fi
    fi
    wait "$SERVER_PID" 2>/dev/null
    for c in $kids; do
        kill -0 "$c" 2>/dev/null || continue
        sleep 1
        kill -0 "$c" 2>/dev/null || continue
        log "child $c of server $SERVER_PID still running; killing"
        kill -KILL "$c" 2>/dev/null
    done
    SERVER_PID=""
}
trap 'stop_server' EXIT
trap 'stop_server; exit 130' INT TERM

wait_health() { # port -> 0 when /health answers 200
    local port=$1 deadline=$((SECONDS + HEALTH_TIMEOUT)) code
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/health" 2>/dev/null)
        [ "$code" = 200 ] && return 0
        sleep 0.25
    done
    return 1
}

start_server() { # kind model_path parallel ctx_per_slot port logfile [budget]
    # model_path a directory: multi-model mode (s5), at most 2 models loaded;
    # corral also gets --memory-budget (7th argument, bytes)
    local kind=$1 model=$2 np=$3 ctx=$4 port=$5 logf=$6 budget=${7:-}
    local -a cmd
    if [ -d "$model" ] && [ "$kind" = llama ]; then
        cmd=("$LLAMA_SERVER_BIN" --models-dir "$model" --models-max 2 --host 127.0.0.1 --port "$port"
             -np "$np" -c $((ctx * np)) -t "$THREADS" --no-webui)
        # shellcheck disable=SC2206
        [ -n "${LLAMA_SERVER_ARGS:-}" ] && cmd+=($LLAMA_SERVER_ARGS)
    elif [ -d "$model" ]; then
        cmd=("$CORRAL_BIN" serve --models-dir "$model" --max-models 2 --port "$port"
             --parallel "$np" --max-concurrent "$np" --ctx "$ctx" --threads "$THREADS")
        [ -n "$budget" ] && cmd+=(--memory-budget "$budget")
        # shellcheck disable=SC2206
        [ -n "${CORRAL_ARGS:-}" ] && cmd+=($CORRAL_ARGS)
    elif [ "$kind" = llama ]; then
        cmd=("$LLAMA_SERVER_BIN" -m "$model" --alias bench --host 127.0.0.1 --port "$port"
             -np "$np" -c $((ctx * np)) -t "$THREADS" --no-webui)
        # shellcheck disable=SC2206
        [ -n "${LLAMA_SERVER_ARGS:-}" ] && cmd+=($LLAMA_SERVER_ARGS)
    else
        cmd=("$CORRAL_BIN" serve --model "bench=$model" --port "$port"
             --parallel "$np" --max-concurrent "$np" --ctx "$ctx" --threads "$THREADS")
        # shellcheck disable=SC2206
        [ -n "${CORRAL_ARGS:-}" ] && cmd+=($CORRAL_ARGS)
    fi
    echo "# ${cmd[*]}" >"$logf"
    "${cmd[@]}" >>"$logf" 2>&1 &
    SERVER_PID=$!
}

# ------------------------------------------------------------------ scenarios

# id|title|parallel|ctx per slot|loadgen args (requests/warmup appended below)
SCEN=(
  "s1|1 stream, 128-token prompt, 256 out|1|1024|--$ENDPOINT --concurrency 1 --prompt-tokens 128 --max-tokens 256"
  "s2|8 streams, 128-token prompts, 128 out|8|1024|--$ENDPOINT --concurrency 8 --prompt-tokens 128 --max-tokens 128"
)
# extended scenarios: with --extended, or when --only names them.
# s5 runs once, on its own three models (not once per entry of MODELS): every
# request asks for another model than the last, with room for two of three,
# so nearly every request waits for a model load.
# s6 runs wrk instead of the loadgen (its last field is unused); s7 stands
# for one entry per level of SWEEP_LEVELS (s7-c1, s7-c2, ...), each starting
# both servers with --parallel = that level.
EXT_SCEN=(
  "s3|8 streams, shared ~1000-token system prompt + distinct 32-token question, 64 out|8|2048|--chat --concurrency 8 --system-prompt-tokens 1000 --prompt-tokens 32 --max-tokens 64"
  "s4|4 streams, 10-turn chats (history resent each turn), 64 out per turn|4|4096|--chat --concurrency 4 --turns 10 --prompt-tokens 128 --turn-tokens 32 --max-tokens 64"
  "s8|4 10-turn chats over 2 slots (each turn usually finds its slot taken by another chat), 64 out per turn|2|4096|--chat --concurrency 4 --turns 10 --prompt-tokens 128 --turn-tokens 32 --max-tokens 64"
  "s5|three models, memory budget for two, round robin (1 stream, 32-token prompts, 16 out)|1|512|--completions --concurrency 1 --models a,b,c --prompt-tokens 32 --max-tokens 16"
  "s9|6 streams generating (128-token prompts, 256 out) while 1500-token prompts join one at a time (16 out)|8|2048|--completions --concurrency 6 --prompt-tokens 128 --max-tokens 256"
  "s6|GET /health and GET /v1/models under wrk ($WRK_THREADS threads, $WRK_CONNECTIONS connections, ${WRK_DURATION} s each)|8|1024|"
  "s7|concurrency sweep|0|1024|"
)
named() { # scenario -> 0 if --only names it (s7-c4 is also named by s7)
    local o; for o in "${ONLY[@]+"${ONLY[@]}"}"; do
        [ "$o" = "$1" ] && return 0
        case $1 in s7-c*) [ "$o" = s7 ] && return 0 ;; esac
    done
    return 1
}
sweep_wanted() { # level -> 0 if that s7 level runs
    [ $EXTENDED -eq 1 ] && return 0
    named "s7-c$1"
}
for spec in "${EXT_SCEN[@]}"; do
    sid=${spec%%|*}
    if [ "$sid" = s7 ]; then
        for n in $SWEEP_LEVELS; do
            sweep_wanted "$n" || continue
            SCEN+=("s7-c$n|sweep: $n stream$([ "$n" -gt 1 ] && echo s), 128-token prompts, 128 out|$n|1024|--$ENDPOINT --concurrency $n --prompt-tokens 128 --max-tokens 128")
        done
    elif [ $EXTENDED -eq 1 ] || named "$sid"; then
        SCEN+=("$spec")
    fi
done
# the equal-slot matrix (--matrix, or --only m-cN-oT)
for n in 1 4 8; do
    for t in 64 256; do
        sid="m-c$n-o$t"
        if [ $MATRIX -eq 1 ] || named "$sid"; then
            SCEN+=("$sid|matrix: $n stream$([ "$n" -gt 1 ] && echo s), 128-token prompts, $t out|$n|1024|--$ENDPOINT --concurrency $n --prompt-tokens 128 --max-tokens $t")
        fi
    done
done
WRK_BIN=${WRK_BIN:-$( [ -x /usr/bin/wrk ] && echo /usr/bin/wrk || command -v wrk || true)}
[ -n "$WRK_BIN" ] && [ ! -x "$WRK_BIN" ] && WRK_BIN="" # counts as missing

# requests and warmup per scenario and model size: sized so that the default
# run (134M, s1+s2, both servers) stays well under 10 minutes on 2 cores
counts() { # scenario model -> "requests warmup"
    # s4: 4 streams x 10 turns = 40 requests make one full conversation per
    # stream (a stream that ends its conversation starts a new one); its 4
    # warmup requests (first turns of conversations that are then dropped)
    # make a server that loads its model on first use (corral) load it
    # before the measured turns. s7-cN:
    # N streams; full runs 3 requests per stream (at least 4), warmup N.
    local s=$1 m=$2 n
    case $s in s7-c*) n=${s#s7-c} ;; m-c*) n=${s#m-c}; n=${n%%-*}; s=s7-c$n ;; esac
    if [ $QUICK -eq 1 ]; then
        case $s in s1) echo "2 1" ;; s2) echo "8 2" ;; s3) echo "8 2" ;; s4|s8) echo "40 4" ;; s5) echo "6 0" ;;
                   s7-c*) echo "$((n < 2 ? 2 : n)) 1" ;; esac
        return
    fi
    [ "$s" = s5 ] && { echo "12 0"; return; }
    [ "$s" = s9 ] && { echo "12 0"; return; }
    if [ "$m" = 1.1b ]; then
        case $s in s1) echo "2 1" ;; s2) echo "8 2" ;; s3) echo "8 2" ;; s4|s8) echo "40 4" ;;
                   s7-c*) echo "$((n < 2 ? 2 : n)) $(((n + 3) / 4))" ;; esac
    else
        case $s in s1) echo "6 1" ;; s2) echo "24 8" ;; s3) echo "24 8" ;; s4) echo "80 4" ;; s8) echo "40 4" ;;
                   s7-c*) echo "$((3 * n < 4 ? 4 : 3 * n)) $n" ;; esac
    fi
}

want_scenario() {
    [ ${#ONLY[@]} -eq 0 ] && return 0
    named "$1"
}

S5_BUDGET="" S5_ESTIMATE=""
s5_budget() { # parallel ctx -> sets S5_BUDGET (bytes) = 2.5 x corral's estimate for one model
    [ -n "$S5_BUDGET" ] && return 0
    local np=$1 ctx=$2 port logf=$RUN_DIR/$S5_NAME-s5-corral-estimate.log deadline est
    port=$(free_port)
    log "s5: asking corral for one model's memory estimate (port $port)"
    local -a cmd=("$CORRAL_BIN" serve --models-dir "$S5_DIR" --preload a --port "$port"
                  --parallel "$np" --max-concurrent "$np" --ctx "$ctx" --threads "$THREADS")
    # shellcheck disable=SC2206
    [ -n "${CORRAL_ARGS:-}" ] && cmd+=($CORRAL_ARGS)
    echo "# ${cmd[*]}" >"$logf"
    "${cmd[@]}" >>"$logf" 2>&1 &
    SERVER_PID=$!
    est=0
    if wait_health "$port"; then
        deadline=$((SECONDS + HEALTH_TIMEOUT))
        while [ $SECONDS -lt $deadline ] && kill -0 "$SERVER_PID" 2>/dev/null; do
            est=$(curl -s -m 5 "http://127.0.0.1:$port/admin/models" 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    print(next((m.get("memory_estimated") or 0 for m in d.get("data", [])
                if m.get("id") == "a" and m.get("status") == "loaded"), 0))
except Exception:
    print(0)' 2>/dev/null)
            [ "${est:-0}" -gt 0 ] 2>/dev/null && break
            est=0
            sleep 0.25
        done
    fi
    stop_server
    if [ "${est:-0}" -le 0 ] 2>/dev/null; then
        log "s5: no memory_estimated for model a from corral (see $logf)"
        return 1
    fi
    S5_ESTIMATE=$est
    S5_BUDGET=$((est * 5 / 2))
    log "s5: one model estimated at $est bytes; corral --memory-budget $S5_BUDGET"
}

s5_swaps() { # kind port base: model loads/evictions -> $base.swaps.json
    local kind=$1 port=$2 base=$3
    if [ "$kind" = corral ]; then
        curl -s -m 10 "http://127.0.0.1:$port/admin/pool" >"$base.pool.json" 2>/dev/null
        python3 - "$base.pool.json" "$S5_ESTIMATE" >"$base.swaps.json" 2>/dev/null <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"loads": d.get("loads"), "evictions": d.get("evictions"),
                  "load_failures": d.get("load_failures"), "memory_budget": d.get("memory_budget"),
                  "max_models": d.get("max_models"), "estimate": int(sys.argv[2] or 0),
                  "source": "GET /admin/pool"}))
PY
    else
        # the router's own log (child lines are prefixed with [port])
        local logf=$base.server.log
        printf '{"loads": %d, "evictions": %d, "exits": %d, "source": "router log"}\n' \
            "$(grep -c 'load: spawning server instance with name=' "$logf")" \
            "$(grep -c 'evicting idle LRU' "$logf")" \
            "$(grep -cE 'run: +instance name=.* exited' "$logf")" >"$base.swaps.json"
        grep -E 'spawning server instance with name=|evicting|instance name=.* exited' "$logf" \
            >"$base.swaps.log" 2>/dev/null
    fi
}

wait_quiet() {
    [ "$WAIT_QUIET" -gt 0 ] || return 0
    local deadline=$((SECONDS + WAIT_QUIET)) l
    while :; do
        l=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
        awk -v l="$l" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }' && return 0
        if [ $SECONDS -ge $deadline ]; then
            log "load average still $l after ${WAIT_QUIET}s; running anyway"
            return 0
        fi
        sleep 5
    done
}

peak_rss_kb() { # pid -> VmHWM (kB) of pid plus that of its live children
    # (llama-server's router children in s5; evicted ones are gone by then)
    local pid=$1 total v c
    total=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
    [ -n "$total" ] || return 1
    for c in $(pgrep -P "$pid" 2>/dev/null); do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$c/status" 2>/dev/null)
        [ -n "$v" ] && total=$((total + v))
    done
    echo "$total"
}

run_wrk() { # port base: wrk on GET /health and GET /v1/models -> $base.json
    local port=$1 base=$2 ep name path url code rc
    # one small completion first, so that a server that loads its model on
    # first use (corral) is measured, and its RSS read, with the model loaded
    "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --model bench --requests 1 --completions \
        --prompt-tokens 16 --max-tokens 8 --json >"$base.warm.json" 2>"$base.loadgen.err" ||
        log "s6: warm-up completion failed (see $base.warm.json)"
    for ep in health:/health models:/v1/models; do
        name=${ep%%:*} path=${ep#*:}
        url="http://127.0.0.1:$port$path"
        code=$(curl -s -o "$base.$name.body" -m 10 -w '%{http_code}' "$url" 2>/dev/null)
        echo "${code:-000}" >"$base.wrk-$name.status"
        log "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${WRK_DURATION}s --latency $url (first GET: HTTP ${code:-none})"
        # shellcheck disable=SC2086
        "$WRK_BIN" -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WRK_DURATION}s" --latency ${WRK_ARGS:-} "$url" \
            >"$base.wrk-$name.txt" 2>&1
        rc=$?
        [ $rc -ne 0 ] && log "wrk exit $rc (see $base.wrk-$name.txt)"
        echo "$rc" >"$base.wrk-$name.rc"
    done
    python3 - "$base" "$WRK_THREADS" "$WRK_CONNECTIONS" "$WRK_DURATION" "${WRK_ARGS:-}" >"$base.json" <<'PY'
import json, re, sys
base, threads, conns, dur, extra = sys.argv[1:6]
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}

def ms(v):  # "1.23ms" -> 1.23
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", v)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None

def parse(name):
    r = {"status": None, "rc": None}
    try:
        r["status"] = open(f"{base}.wrk-{name}.status").read().strip()
        r["rc"] = int(open(f"{base}.wrk-{name}.rc").read().strip() or -1)
        text = open(f"{base}.wrk-{name}.txt").read()
    except (OSError, ValueError) as e:
        r["error"] = str(e)
        return r
    if m := re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M):
        r["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        if m := re.search(rf"^\s*{pct}%\s+(\S+)", text, re.M):
            r[f"p{pct}_ms"] = ms(m.group(1))
    if m := re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", text, re.M):
        r["requests"] = int(m.group(1))
    err = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        err = dict(zip(err, map(int, m.groups())))
    r["socket_errors"] = err
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    r["errors_text"] = "{connect} / {read} / {write} / {timeout}".format(**err) + f" / {r['non2xx']}"
    if "rps" not in r:
        r["error"] = "no Requests/sec in wrk output: " + " | ".join(text.strip().splitlines()[-3:])[:300]
    return r

w = {n: parse(n) for n in ("health", "models")}
ok = sum(max(0, (v.get("requests") or 0) - v.get("non2xx", 0)) for v in w.values())
failed = sum(sum(v.get("socket_errors", {}).values()) + v.get("non2xx", 0) for v in w.values())
st = {}
for v in w.values():
    if v.get("status"):
        st[v["status"]] = st.get(v["status"], 0) + 1
out = {"config": {"tool": "wrk", "threads": int(threads), "connections": int(conns),
                  "duration_s": int(dur), "extra_args": extra},
       "wrk": w, "requests": {"ok": ok, "failed": failed, "errors": [
           {"count": 1, "message": f"GET {p}: {v['error']}"}
           for p, v in (("/health", w["health"]), ("/v1/models", w["models"])) if v.get("error")]}}
print(json.dumps(out, indent=2))
PY
}

run_one() { # kind scenario-spec model-name rep -> $RUN_DIR/<model>-<s>-<kind>.r<rep>.json
    local kind=$1 spec=$2 mname=$3 rep=$4
    local sid np ctx largs
    IFS='|' read -r sid _ np ctx largs <<<"$spec"
    local model; model=$(model_file "$mname")
    local base="$RUN_DIR/$mname-$sid-$kind.r$rep"
    local budget=""
    if [ "$sid" = s5 ] && [ "$kind" = corral ]; then
        if ! s5_budget "$np" "$ctx"; then
            printf '{"error": "no memory estimate from corral (see %s)"}\n' \
                "$(basename "$RUN_DIR/$S5_NAME-s5-corral-estimate.log")" >"$base.json"
            return 1
        fi
        budget=$S5_BUDGET
    fi
    wait_quiet
    local port; port=$(free_port)
    read -r nreq nwarm <<<"$(counts "$sid" "$mname")"
    log "$mname $sid $kind (run $rep/$REPEAT): starting on port $port"
    start_server "$kind" "$model" "$np" "$ctx" "$port" "$base.server.log" "$budget"
    if ! wait_health "$port"; then
        log "$mname $sid $kind: server not healthy within ${HEALTH_TIMEOUT}s (see $base.server.log)"
        printf '{"error": "server did not become healthy", "log_tail": %s}\n' \
            "$(tail -n 5 "$base.server.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))' 2>/dev/null || echo '""')" >"$base.json"
        stop_server
        return 1
    fi
    cut -d' ' -f1 /proc/loadavg >"$base.load" 2>/dev/null
    local rc=0
    if [ "$sid" = s6 ]; then
        run_wrk "$port" "$base"
    else
        log "$mname $sid $kind: loadgen ($nreq requests, $nwarm warmup)"
        # 8-stream runs keep every gap over time, for the ITL-over-time plot
        local trace=()
        case $sid in s2|s7-c8|m-c8-*) trace=(--trace "$base.itl.tsv") ;; esac
        # s9: the joining long prompts, from a second client started once
        # the streams run; the streams' gaps are the point
        local join_pid=""
        if [ "$sid" = s9 ]; then
            (sleep 1; exec "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --model bench --requests 6 \
                --label "$mname-$sid-$kind-join" --json --completions --concurrency 1 --prompt-tokens 1500 \
                --max-tokens 16 --seed 7 ${LOADGEN_ARGS:-} >"$base.join.json" 2>"$base.join.err") &
            join_pid=$!
        fi
        # shellcheck disable=SC2086
        "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --model bench --requests "$nreq" \
            --warmup "$nwarm" --label "$mname-$sid-$kind" --json $largs ${LOADGEN_ARGS:-} "${trace[@]}" \
            >"$base.json" 2>"$base.loadgen.err"
        rc=$?
        if [ -n "$join_pid" ]; then wait "$join_pid" || rc=3; fi
    fi
    cut -d' ' -f1 /proc/loadavg >>"$base.load" 2>/dev/null
    [ $rc -ne 0 ] && log "$mname $sid $kind: loadgen exit $rc (3 = some requests failed)"
    [ -s "$base.json" ] || printf '{"error": "loadgen exit %d"}\n' "$rc" >"$base.json"
    [ "$sid" = s5 ] && [ "$kind" = corral ] && s5_swaps corral "$port" "$base"
    # peak RSS (VmHWM) just before stopping; the server is still running
    peak_rss_kb "$SERVER_PID" >"$base.rss" || rm -f "$base.rss"
    stop_server
    [ "$sid" = s5 ] && [ "$kind" = llama ] && s5_swaps llama "$port" "$base"
    return 0
}

run_scenario() { # spec model-name: every repeat, both servers
    local spec=$1 mname=$2 rep order kind
    for rep in $(seq 1 "$REPEAT"); do
        # alternate the order so that neither server always runs first
        if [ $((rep % 2)) -eq 1 ]; then order="llama corral"; else order="corral llama"; fi
        for kind in $order; do
            [ "$kind" = llama ] && [ $DO_LLAMA -eq 0 ] && continue
            [ "$kind" = corral ] && [ $DO_CORRAL -eq 0 ] && continue
            run_one "$kind" "$spec" "$mname" "$rep"
        done
    done
}

REPORT_MODELS=("${MODELS[@]}")
for mname in "${MODELS[@]}"; do
    for spec in "${SCEN[@]}"; do
        sid=${spec%%|*}
        [ "$sid" = s5 ] && continue
        want_scenario "$sid" || continue
        if [ "$sid" = s6 ] && [ -z "$WRK_BIN" ]; then
            log "s6: wrk not found; skipped"
            continue
        fi
        run_scenario "$spec" "$mname"
    done
done
for spec in "${SCEN[@]}"; do
    if [ "${spec%%|*}" != s5 ] || ! want_scenario s5; then continue; fi
    if make_s5_models; then
        REPORT_MODELS+=("$S5_NAME")
        run_scenario "$spec" "$S5_NAME"
    else
        NOTES+=("s5: could not make its three models; skipped")
    fi
done

if [ -z "$WRK_BIN" ] && printf '%s\n' "${SCEN[@]}" | grep -q '^s6|'; then
    NOTES+=("s6 skipped: wrk not found (install Debian's wrk, e.g. scripts/install-deps.sh --bench, or set WRK_BIN)")
fi

# ------------------------------------------------------------------ ceiling

CEIL_FILE=$RUN_DIR/ceiling.md
: >"$CEIL_FILE"
if [ $DO_CEILING -eq 1 ]; then
    LB=$(find_bin llama-bench || true)
    LBB=$(find_bin llama-batched-bench || true)
    if [ $DO_BUILD -eq 1 ]; then
        [ -z "$LB" ] && build_target llama-bench "$CEILING_BUILD_TIMEOUT" && LB=$(find_bin llama-bench || true)
        [ -z "$LBB" ] && build_target llama-batched-bench "$CEILING_BUILD_TIMEOUT" && LBB=$(find_bin llama-batched-bench || true)
    fi
    for mname in "${MODELS[@]}"; do
        model=$(model_file "$mname")
        if [ -n "$LB" ]; then
            log "llama-bench $mname"
            # tg256 @ d128 is s1's decode (256 tokens after a 128-token
            # prompt); flash attention both ways, the better is the ceiling
            { echo "### llama-bench, $mname (pp128, tg256 from depth 0 and 128, flash attention off/on, $THREADS threads)"; echo
              timeout 400 "$LB" -m "$model" -t "$THREADS" -p 128 -n 256 -d 0,128 -fa 0,1 -r 2 -o md \
                  2>>"$RUN_DIR/llama-bench.err" ||
                  echo "(llama-bench failed; see $RUN_DIR/llama-bench.err)"
              echo; } >>"$CEIL_FILE"
        fi
        if [ -n "$LBB" ]; then
            log "llama-batched-bench $mname"
            { echo "### llama-batched-bench, $mname (prompt 128, gen 128, 1 and 8 sequences)"; echo
              timeout 300 "$LBB" -m "$model" -t "$THREADS" -c 4096 -b 2048 -ub 512 \
                  -npp 128 -ntg 128 -npl 1,8 2>>"$RUN_DIR/llama-batched-bench.err" |
                  grep '^|' || echo "(llama-batched-bench failed; see $RUN_DIR/llama-batched-bench.err)"
              echo; } >>"$CEIL_FILE"
        fi
    done
    [ -z "$LB" ] && [ -z "$LBB" ] && echo "(llama-bench / llama-batched-bench not built; ceiling skipped)" >>"$CEIL_FILE"
fi

# ------------------------------------------------------------------ report

NOTES_FILE=$RUN_DIR/notes.txt
{
    for spec in "${SCEN[@]}"; do echo "$spec"; done
} >"$RUN_DIR/scenarios.txt"

# One Python program, two modes:
#   sweep  RUN_DIR THREADS MODEL   -> s7 data file on stdout (streams, corral tok/s, llama-server tok/s)
#   report RUN_DIR THREADS M1,M2,  -> the markdown report on stdout
REPORT_PY=$(cat <<'PY'
import json, os, re, sys, platform, subprocess, datetime
mode, run_dir, threads = sys.argv[1], sys.argv[2], sys.argv[3]
scen = [l.rstrip("\n").split("|") for l in open(os.path.join(run_dir, "scenarios.txt")) if l.strip()]

def get(d, *path):
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d

def score(d):
    """what "best run" means: aggregate tok/s, or /health req/s for s6"""
    v = d.get("tokens_per_s")
    if v is None:
        v = get(d, "wrk", "health", "rps")
    return v

def load_one(p):
    try:
        d = json.load(open(p))
    except Exception as e:
        return {"error": f"unreadable result: {e}"}
    try:
        d["_load"] = " → ".join(l.strip() for l in open(p[:-5] + ".load") if l.strip())
    except OSError:
        pass
    try:  # VmHWM of the server (kB) read just before it was stopped
        d["_rss_mib"] = int(open(p[:-5] + ".rss").read().strip()) / 1024
    except (OSError, ValueError):
        pass
    ok, pt = get(d, "requests", "ok"), d.get("prompt_tokens")
    if ok and pt:  # mean prompt tokens per request, as the server counted them
        d["_prompt_per_req"] = pt / ok
    try:  # s9: the joining prompts' own report
        d["_join"] = json.load(open(p[:-5] + ".join.json"))
    except (OSError, ValueError):
        pass
    try:  # s5: model loads / evictions after the run
        sw = json.load(open(p[:-5] + ".swaps.json"))
        d["_swaps"] = sw
        d["_swaps_text"] = f"{sw.get('loads', '?')} / {sw.get('evictions', '?')}"
    except (OSError, ValueError):
        pass
    return d

def load(m, s, k):
    """The best of a server's runs (highest score among runs with no failed
    request; else the first run), with all runs' scores in _runs."""
    runs = []
    rep = 1
    while os.path.exists(p := os.path.join(run_dir, f"{m}-{s}-{k}.r{rep}.json")):
        runs.append(load_one(p))
        rep += 1
    if not runs:
        return None
    good = [d for d in runs if get(d, "requests", "ok") and not get(d, "requests", "failed")]
    best = max(good, key=lambda d: score(d) or 0) if good else runs[0]
    if len(runs) > 1:
        best["_runs"] = " / ".join("{:.1f}".format(score(d)) if score(d) is not None else "err"
                                   for d in runs)
    return best

sweep = [(int(s[0][len("s7-c"):]), s[0]) for s in scen if s[0].startswith("s7-c")]
matrix = [s[0] for s in scen if s[0].startswith("m-c")]

if mode == "sweep":
    m = sys.argv[4]
    print(f"# s7 concurrency sweep, model {m}: aggregate tokens/s (best run of each server); "
          "128-token prompts, 128 out, --parallel = streams")
    print("# streams\tcorral_tok_s\tllama_server_tok_s")
    for n, sid in sweep:
        v = []
        for k in ("corral", "llama"):
            t = get(load(m, sid, k), "tokens_per_s")
            v.append("NaN" if t is None else f"{t:.2f}")
        print(f"{n}\t{v[0]}\t{v[1]}")
    sys.exit(0)

models = [m for m in sys.argv[4].split(",") if m]
notes = [l.strip() for l in open(os.path.join(run_dir, "notes.txt")) if l.strip()]
plots = {}
try:
    for l in open(os.path.join(run_dir, "plots.txt")):
        if l.strip():
            pm, dat, png = (l.rstrip("\n").split("|") + ["", ""])[:3]
            plots[pm] = (dat, png)
except OSError:
    pass

# label, path, higher_is_better, format
RSS = ("peak RSS MiB", ("_rss_mib",), False, "{:.0f}")
rows = [
    ("requests ok / failed", None, None, None),
    ("aggregate tok/s", ("tokens_per_s",), True, "{:.1f}"),
    ("per-stream tok/s p50", ("stream_tokens_per_s", "p50"), True, "{:.1f}"),
    ("TTFT p50 ms", ("ttft_ms", "p50"), False, "{:.1f}"),
    ("TTFT p95 ms", ("ttft_ms", "p95"), False, "{:.1f}"),
    ("TTFT p99 ms", ("ttft_ms", "p99"), False, "{:.1f}"),
    ("ITL p50 ms", ("itl_ms", "p50"), False, "{:.2f}"),
    ("ITL p95 ms", ("itl_ms", "p95"), False, "{:.2f}"),
    ("ITL p99 ms", ("itl_ms", "p99"), False, "{:.2f}"),
    ("E2E p50 ms", ("e2e_ms", "p50"), False, "{:.0f}"),
    RSS,
    ("prompt tokens / request", ("_prompt_per_req",), None, "{:.0f}"),
    ("completion tokens", ("completion_tokens",), None, "{}"),
    ("wall s", ("wall_s",), None, "{:.2f}"),
    ("load avg before → after", ("_load",), None, "{}"),
    ("tok/s of each run (best shown)", ("_runs",), None, "{}"),
]
# s5 (model swaps): wall time is the figure; its ratio is shown (below 1 =
# corral faster), plus the servers' own count of model loads and evictions
rows_s5 = [("wall s", ("wall_s",), False, "{:.2f}") if r[0] == "wall s" else r for r in rows]
rows_s5.insert(rows_s5.index(next(r for r in rows_s5 if r[0] == "wall s")) + 1,
               ("model loads / evictions", ("_swaps_text",), None, "{}"))
# s9 (long prompts joining running streams): the streams' gaps, their
# longest one, and the joining prompts' time to first token
rows_s9 = [r for r in rows if r[0] not in ("E2E p50 ms", "prompt tokens / request")]
rows_s9.insert(rows_s9.index(next(r for r in rows_s9 if r[0] == "ITL p99 ms")) + 1,
               ("ITL max ms", ("itl_ms", "max"), False, "{:.1f}"))
rows_s9[1:1] = [("joining prompts: TTFT p50 ms", ("_join", "ttft_ms", "p50"), False, "{:.0f}"),
                ("joining prompts: TTFT max ms", ("_join", "ttft_ms", "max"), False, "{:.0f}"),
                ("joining prompts: requests ok", ("_join", "requests", "ok"), None, "{}")]
# s6 (wrk): requests/s and latency per endpoint; "requests ok / failed" adds
# up both endpoints (failed = socket errors + non-2xx answers)
rows_s6 = [("requests ok / failed", None, None, None)]
for ep, key in (("/health", "health"), ("/v1/models", "models")):
    rows_s6 += [
        (f"GET {ep} first answer (HTTP status)", ("wrk", key, "status"), None, "{}"),
        (f"GET {ep} requests/s", ("wrk", key, "rps"), True, "{:.0f}"),
        (f"GET {ep} latency p50 ms", ("wrk", key, "p50_ms"), False, "{:.2f}"),
        (f"GET {ep} latency p99 ms", ("wrk", key, "p99_ms"), False, "{:.2f}"),
        (f"GET {ep} errors connect / read / write / timeout / non-2xx", ("wrk", key, "errors_text"), None, "{}"),
    ]
rows_s6 += [RSS, ("load avg before → after", ("_load",), None, "{}"),
            ("/health req/s of each run (best shown)", ("_runs",), None, "{}")]

def cell(d, r):
    if d is None:
        return "not run"
    if "error" in d and "requests" not in d:
        return "**" + d["error"] + "**" if r[1] is None else "–"
    label, path, _, fmt = r
    if path is None:
        rq = d["requests"]
        s = f"{rq['ok']} / {rq['failed']}"
        if rq["failed"]:
            s = f"**{s}**"
        bad = {k: v for k, v in rq.get("http_status", {}).items() if k != "200"}
        if bad:
            s += " (" + ", ".join(f"HTTP {k}: {v}" for k, v in bad.items()) + ")"
        return s
    v = get(d, *path)
    return "–" if v is None else fmt.format(v)

def ratio(a, b, r):
    _, path, hib, _ = r
    if path is None or hib is None or a is None or b is None:
        return ""
    va, vb = get(a, *path), get(b, *path)
    if not isinstance(va, (int, float)) or not isinstance(vb, (int, float)) or vb == 0:
        return ""
    return f"{va / vb:.2f}"

out = []
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(run_dir))))
rel = lambda p: os.path.relpath(p, root)
cpu = ""
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip(); break
except OSError:
    pass
try:
    rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
except Exception:
    rev = ""
out.append("# corral vs llama-server")
out.append("")
out.append(f"{datetime.datetime.now().isoformat(timespec='seconds')} · {cpu or platform.machine()} · "
           f"{os.cpu_count()} CPUs · {threads} threads per server · git {rev or '?'} · raw data in `{rel(run_dir)}`")
out.append("")
out.append("Ratio = corral / llama-server: above 1 is better for tok/s and req/s, below 1 is better for "
           "latencies (ms) and peak RSS. "
           "Servers ran one at a time on the same machine; compare ratios, not absolute figures across runs. "
           "Peak RSS is the server process's VmHWM (/proc/PID/status) read just before it was stopped. "
           f"The server under test alone keeps the 1-minute load average at or below its thread count ({threads}, "
           f"on {os.cpu_count()} CPUs); a load average well above that means other processes shared the CPUs "
           "and that column's figures are suspect.")
out.append("")

def sweep_summary(m):
    levels = [(n, sid, load(m, sid, "llama"), load(m, sid, "corral")) for n, sid in sweep]
    levels = [x for x in levels if x[2] is not None or x[3] is not None]
    if not levels:
        return
    out.append(f"## {m} · s7: concurrency sweep (aggregate tok/s)")
    out.append("")
    out.append("Same load as s2 (128-token prompts, 128 out) at each number of concurrent streams; each "
               "server started once per level with --parallel = streams (corral also --max-concurrent). "
               "Per-level tables follow.")
    out.append("")
    r = rows[1]
    out.append("| streams | llama-server tok/s | corral tok/s | corral / llama-server | "
               "peak RSS MiB llama-server | peak RSS MiB corral |")
    out.append("|---:|---:|---:|---:|---:|---:|")
    for n, sid, b, a in levels:
        out.append(f"| {n} | {cell(b, r)} | {cell(a, r)} | {ratio(a, b, r)} | {cell(b, RSS)} | {cell(a, RSS)} |")
    out.append("")
    dat, plot = plots.get(m, ("", ""))
    if dat:
        out.append(f"- data: `{rel(dat)}` (streams, corral tok/s, llama-server tok/s)")
    out.append(f"- plot: `{rel(plot)}`" if plot else "- plot: none (see notes)")
    out.append("")

def matrix_summary(m):
    cells = [(sid, load(m, sid, "llama"), load(m, sid, "corral")) for sid in matrix]
    cells = [c for c in cells if c[1] is not None or c[2] is not None]
    if not cells:
        return
    out.append(f"## {m} · equal-slot matrix (ratios corral / llama-server)")
    out.append("")
    out.append("128-token prompts; each server started per cell with --parallel = streams (corral also "
               "--max-concurrent). Targets: tok/s >= 1.00 in every cell, ITL p99 <= 1.5 and TTFT p50 <= 0.70 "
               "at 8 streams. Per-cell tables follow.")
    out.append("")
    out.append("| streams | out | tok/s llama-server | tok/s corral | tok/s | TTFT p50 | ITL p50 | ITL p99 |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    pick = {r[0]: r for r in rows}
    for sid, b, a in cells:
        n, t = sid[len("m-c"):].split("-o")
        out.append(f"| {n} | {t} | {cell(b, pick['aggregate tok/s'])} | {cell(a, pick['aggregate tok/s'])} | "
                   f"{ratio(a, b, pick['aggregate tok/s'])} | {ratio(a, b, pick['TTFT p50 ms'])} | "
                   f"{ratio(a, b, pick['ITL p50 ms'])} | {ratio(a, b, pick['ITL p99 ms'])} |")
    out.append("")

for m in models:
    matrix_summary(m)
    done_sweep = False
    for s in scen:
        sid, title = s[0], s[1]
        a, b = load(m, sid, "corral"), load(m, sid, "llama")
        if a is None and b is None:
            continue
        h = "##"
        if sid.startswith("s7-c"):
            if not done_sweep:
                sweep_summary(m)
                done_sweep = True
            h = "###"
        cfg = get(b, "config") or get(a, "config") or {}
        out.append(f"{h} {m} · {sid}: {title}")
        out.append("")
        if sid == "s6":
            out.append(f"`wrk -t{cfg.get('threads', '?')} -c{cfg.get('connections', '?')} "
                       f"-d{cfg.get('duration_s', '?')}s --latency " + (cfg.get('extra_args') or '') + ("" if not cfg.get('extra_args') else " ") + "URL` "
                       "against `GET /health`, then `GET /v1/models` (one plain GET each first, its status "
                       "shown); both servers started as in s2 (8 slots). wrk's latency figures leave out "
                       "requests that hit its timeout (2 s unless WRK_ARGS sets --timeout): see the errors row.")
            out.append("")
        elif cfg:
            out.append(f"endpoint {cfg.get('endpoint', '?')}, {cfg.get('requests', '?')} requests measured "
                       f"after {cfg.get('warmup', '?')} warmup, concurrency {cfg.get('concurrency', '?')}"
                       + (f", {cfg['turns']} turns per conversation" if (cfg.get('turns') or 1) > 1 else "")
                       + (f", {cfg['system_prompt_tokens']}-word shared system prompt"
                          if cfg.get('system_prompt_tokens') else ""))
            out.append("")
        srows = rows_s5 if sid == "s5" else rows_s6 if sid == "s6" else rows_s9 if sid == "s9" else rows
        if sid == "s9":
            out.append("The stream rows are the 6 generating streams'; the joining prompts come from a "
                       "second client, one at a time, from 1 s into the run (6 requests; no warmup, so that they overlap the measured streams).")
            out.append("")
        if sid == "s5":
            sw = get(a, "_swaps") or {}
            budget = sw.get("memory_budget")
            est = sw.get("estimate")
            out.append("three 134M Q8_0 models (ids a, b, c) from one directory, requested round robin; "
                       "llama-server in router mode `--models-dir DIR --models-max 2`; corral "
                       "`--models-dir DIR --max-models 2 --memory-budget "
                       + (f"{budget}` ({budget / 2**20:.0f} MiB = 2.5 × corral's estimate for one model, "
                          f"{est / 2**20:.0f} MiB)" if budget and est else "B` (2.5 × one model's estimate)")
                       + ". Loads / evictions: corral's `GET /admin/pool`; llama-server's router log "
                       "(`spawning server instance`, `evicting idle LRU`). llama-server's peak RSS is "
                       "the router's plus its children alive at the end.")
            out.append("")
        out.append("| metric | llama-server | corral | corral / llama-server |")
        out.append("|---|---:|---:|---:|")
        for r in srows:
            if r[1] == ("_runs",) and not (get(a, "_runs") or get(b, "_runs")):
                continue
            if r[1] == ("_prompt_per_req",) and not (get(a, *r[1]) or get(b, *r[1])):
                continue
            out.append(f"| {r[0]} | {cell(b, r)} | {cell(a, r)} | {ratio(a, b, r)} |")
        if sid == "s5":
            wr = ratio(a, b, next(r for r in srows if r[0] == "wall s"))
            if wr:
                ok = get(a, "requests", "ok") and not get(a, "requests", "failed") \
                    and not get(b, "requests", "failed")
                out.append("")
                out.append(f"- goal: corral wall ≤ 0.5 × llama-server wall: "
                           f"{'met' if float(wr) <= 0.5 and ok else 'not met'} ({wr})")
        for who, d in (("llama-server", b), ("corral", a)):
            if d and "error" in d and d.get("log_tail"):
                out.append("")
                out.append(f"- {who} log tail: `{' | '.join(d['log_tail'].strip().splitlines())[:400]}`")
            for e in (get(d, "requests", "errors") or []):
                out.append(f"")
                out.append(f"- {who} error ×{e['count']}: `{e['message'][:200]}`")
            if d and get(d, "requests", "short"):
                out.append(f"")
                out.append(f"- {who}: {d['requests']['short']} ok requests returned fewer than max_tokens tokens")
        out.append("")
ceil = open(os.path.join(run_dir, "ceiling.md")).read().strip()
if ceil:
    out.append("## Library ceiling (llama.cpp benches, same model and threads)")
    out.append("")
    # s1 against the library: corral's per-stream rate (p50) over
    # llama-bench's tg256 @ d128 (the same decode: 256 tokens after a
    # 128-token prompt), the better of flash attention off and on
    for m in models:
        sec = re.search(r"### llama-bench, " + re.escape(m) + r" .*?(?=\n### |\Z)", ceil, re.S)
        rates = {}
        for line in (sec.group(0).splitlines() if sec else []):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 8 and cells[-2] == "tg256 @ d128":
                try:
                    rates[cells[-3]] = float(cells[-1].split()[0])
                except ValueError:
                    pass
        a = load(m, "s1", "corral")
        ps = get(a, "stream_tokens_per_s", "p50")
        if rates and ps:
            fa, best = max(rates.items(), key=lambda kv: kv[1])
            out.append(f"- {m} s1: corral per-stream {ps:.1f} tok/s against llama-bench tg256 @ d128 "
                       f"{best:.1f} (flash attention {'on' if fa == '1' else 'off'}; "
                       + ", ".join(f"fa {k}: {v:.1f}" for k, v in sorted(rates.items()))
                       + f"): **{ps / best:.2f}** (goal ≥ 0.97)")
    out.append("")
    out.append(ceil)
    out.append("")
if notes:
    out.append("## Notes")
    out.append("")
    for n in notes:
        out.append(f"- {n}")
    out.append("")
print("\n".join(out))
PY
)

# ITL over time for the traced 8-stream runs (first repeat of each server)
GNUPLOT_BIN=${GNUPLOT_BIN:-$(command -v gnuplot || true)}
for ctrace in "$RUN_DIR"/*-corral.r1.itl.tsv; do
    [ -s "$ctrace" ] || continue
    ltrace=${ctrace%-corral.r1.itl.tsv}-llama.r1.itl.tsv
    [ -s "$ltrace" ] || continue
    svg=${ctrace%-corral.r1.itl.tsv}-itl.$PLOT_FMT
    name=$(basename "${ctrace%-corral.r1.itl.tsv}")
    if [ -n "$GNUPLOT_BIN" ] && "$GNUPLOT_BIN" -e "corral='$ctrace'; llama='$ltrace'; outfile='$svg'; title='$name: inter-token gaps over time'" \
            "$ROOT/bench/itl.gp" >"$RUN_DIR/gnuplot-itl-$name.log" 2>&1 && [ -s "$svg" ]; then
        NOTES+=("ITL over time, $name: $(basename "$RUN_DIR")/$(basename "$svg")")
    fi
done

# s7: the sweep's data file and plot, one per model (the first model's are
# sweep.dat / throughput.<fmt>, copied to bench/out/latest-throughput.<fmt>)
: >"$RUN_DIR/plots.txt"
if printf '%s\n' "${SCEN[@]}" | grep -q '^s7-c'; then
    GNUPLOT_BIN=${GNUPLOT_BIN:-$(command -v gnuplot || true)}
    [ -n "$GNUPLOT_BIN" ] && [ ! -x "$GNUPLOT_BIN" ] && GNUPLOT_BIN="" # counts as missing
    [ -z "$GNUPLOT_BIN" ] &&
        NOTES+=("s7: gnuplot not found; no plot, data kept in $(basename "$RUN_DIR")/sweep*.dat (install gnuplot, e.g. scripts/install-deps.sh --bench; bench/README.md shows how to plot it later)")
    for mname in "${MODELS[@]}"; do
        # models after the first: sweep-<model>.dat, throughput-<model>.<fmt>
        if [ "$mname" = "${MODELS[0]}" ]; then stem=""; else stem="-$mname"; fi
        dat=$RUN_DIR/sweep$stem.dat
        if ! python3 -c "$REPORT_PY" sweep "$RUN_DIR" "$THREADS" "$mname" >"$dat"; then
            NOTES+=("s7: could not write $(basename "$dat")")
            continue
        fi
        plot=""
        if [ -n "$GNUPLOT_BIN" ]; then
            plot=$RUN_DIR/throughput$stem.$PLOT_FMT
            log "gnuplot: $plot"
            if "$GNUPLOT_BIN" -e "datafile='$dat'; outfile='$plot'; model='$mname'" "$ROOT/bench/plot.gp" \
                    >"$RUN_DIR/gnuplot$stem.log" 2>&1 && [ -s "$plot" ]; then
                [ -z "$stem" ] && cp "$plot" "$OUT/latest-throughput.$PLOT_FMT"
            else
                NOTES+=("s7: gnuplot failed for $mname (see $(basename "$RUN_DIR")/gnuplot$stem.log); data kept in $(basename "$dat")")
                plot=""
            fi
        fi
        echo "$mname|$dat|$plot" >>"$RUN_DIR/plots.txt"
    done
fi

printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$NOTES_FILE"
if ! python3 -c "$REPORT_PY" report "$RUN_DIR" "$THREADS" "$(printf '%s,' "${REPORT_MODELS[@]}")" >"$RUN_DIR/report.md"
then
    log "report generation failed; raw results are in $RUN_DIR"
    exit 1
fi
cp "$RUN_DIR/report.md" "$OUT/latest.md"
cat "$OUT/latest.md"
log "report: $OUT/latest.md (raw: $RUN_DIR)"
