#!/usr/bin/env bash
# bench/run.sh -- corral against llama-server, same model, same machine.
#
# Builds the needed CMake targets, makes the synthetic bench models with
# corral-mkmodel (bench/out/, kept between runs), then for every scenario
# starts one server at a time (llama-server, then corral), waits for
# /health == 200, drives it with corral-loadgen, and stops it. The servers
# never run at the same time. Results: a markdown report on stdout and in
# bench/out/latest.md; raw loadgen JSON and server logs in bench/out/run-*/.
#
# Usage: bench/run.sh [options]
#   --big            also run the 1.1B Q4_0 model (slow: a few more minutes)
#   --extended       also run the shared-system-prompt (s3), multi-turn (s4)
#                    and three-models-two-fit model swap (s5) scenarios
#   --quick          fewer requests per scenario (smoke test, noisy figures)
#   --only S         run only scenario S (s1 .. s5); repeatable; an extended
#                    scenario named here runs without --extended
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

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
THREADS=$(nproc 2>/dev/null || echo 2)
BIG=0 EXTENDED=0 QUICK=0 DO_BUILD=1 DO_CORRAL=1 DO_LLAMA=1 DO_CEILING=1
ONLY=()
REPEAT=1 WAIT_QUIET=0
QUIET_LOAD=${QUIET_LOAD:-1.0}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-180}
CEILING_BUILD_TIMEOUT=${CEILING_BUILD_TIMEOUT:-300}
ENDPOINT=${BENCH_ENDPOINT:-completions}

while [ $# -gt 0 ]; do
    case "$1" in
        --big) BIG=1 ;;
        --extended) EXTENDED=1 ;;
        --quick) QUICK=1 ;;
        --only) shift; ONLY+=("${1:?--only needs a scenario}") ;;
        --no-build) DO_BUILD=0 ;;
        --no-corral) DO_CORRAL=0 ;;
        --no-llama) DO_LLAMA=0 ;;
        --no-ceiling) DO_CEILING=0 ;;
        --threads) shift; THREADS=${1:?--threads needs a number} ;;
        --repeat) shift; REPEAT=${1:?--repeat needs a number} ;;
        --wait-quiet) shift; WAIT_QUIET=${1:?--wait-quiet needs seconds} ;;
        -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$ENDPOINT" in completions|chat) ;; *) echo "run.sh: BENCH_ENDPOINT must be completions or chat" >&2; exit 2 ;; esac

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
EXT_SCEN=(
  "s3|8 streams, shared 512-token system prompt + 32-token question, 64 out|8|1024|--chat --concurrency 8 --system-prompt-tokens 512 --prompt-tokens 32 --max-tokens 64"
  "s4|4 streams, 3-turn chats, 64 out per turn|4|2048|--chat --concurrency 4 --turns 3 --prompt-tokens 128 --turn-tokens 32 --max-tokens 64"
  "s5|three models, memory budget for two, round robin (1 stream, 32-token prompts, 16 out)|1|512|--completions --concurrency 1 --models a,b,c --prompt-tokens 32 --max-tokens 16"
)
named() { # scenario -> 0 if --only names it
    local o; for o in "${ONLY[@]+"${ONLY[@]}"}"; do [ "$o" = "$1" ] && return 0; done
    return 1
}
for spec in "${EXT_SCEN[@]}"; do
    if [ $EXTENDED -eq 1 ] || named "${spec%%|*}"; then SCEN+=("$spec"); fi
done

# requests and warmup per scenario and model size: sized so that the default
# run (134M, s1+s2, both servers) stays well under 10 minutes on 2 cores
counts() { # scenario model -> "requests warmup"
    local s=$1 m=$2
    if [ $QUICK -eq 1 ]; then
        case $s in s1) echo "2 1" ;; s2) echo "8 2" ;; s3) echo "8 2" ;; s4) echo "12 0" ;; s5) echo "6 0" ;; esac
        return
    fi
    [ "$s" = s5 ] && { echo "12 0"; return; }
    if [ "$m" = 1.1b ]; then
        case $s in s1) echo "2 1" ;; s2) echo "8 2" ;; s3) echo "8 2" ;; s4) echo "12 0" ;; esac
    else
        case $s in s1) echo "6 1" ;; s2) echo "24 8" ;; s3) echo "24 8" ;; s4) echo "24 0" ;; esac
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
    log "$mname $sid $kind: loadgen ($nreq requests, $nwarm warmup)"
    cut -d' ' -f1 /proc/loadavg >"$base.load" 2>/dev/null
    # shellcheck disable=SC2086
    "$LOADGEN_BIN" --url "http://127.0.0.1:$port" --model bench --requests "$nreq" \
        --warmup "$nwarm" --label "$mname-$sid-$kind" --json $largs ${LOADGEN_ARGS:-} \
        >"$base.json" 2>"$base.loadgen.err"
    local rc=$?
    cut -d' ' -f1 /proc/loadavg >>"$base.load" 2>/dev/null
    [ $rc -ne 0 ] && log "$mname $sid $kind: loadgen exit $rc (3 = some requests failed)"
    [ -s "$base.json" ] || printf '{"error": "loadgen exit %d"}\n' "$rc" >"$base.json"
    [ "$sid" = s5 ] && [ "$kind" = corral ] && s5_swaps corral "$port" "$base"
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
            { echo "### llama-bench, $mname (pp128, tg256, $THREADS threads)"; echo
              timeout 300 "$LB" -m "$model" -t "$THREADS" -p 128 -n 256 -r 2 -o md 2>>"$RUN_DIR/llama-bench.err" ||
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
printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$NOTES_FILE"
{
    for spec in "${SCEN[@]}"; do echo "$spec"; done
} >"$RUN_DIR/scenarios.txt"

if ! python3 - "$RUN_DIR" "$THREADS" "$(printf '%s,' "${REPORT_MODELS[@]}")" <<'PY' >"$RUN_DIR/report.md"
import json, os, sys, platform, subprocess, datetime
run_dir, threads, models = sys.argv[1], sys.argv[2], [m for m in sys.argv[3].split(",") if m]
scen = [l.rstrip("\n").split("|") for l in open(os.path.join(run_dir, "scenarios.txt")) if l.strip()]
notes = [l.strip() for l in open(os.path.join(run_dir, "notes.txt")) if l.strip()]

def load_one(p):
    try:
        d = json.load(open(p))
    except Exception as e:
        return {"error": f"unreadable result: {e}"}
    try:
        d["_load"] = " → ".join(l.strip() for l in open(p[:-5] + ".load") if l.strip())
    except OSError:
        pass
    try:  # s5: model loads / evictions after the run
        sw = json.load(open(p[:-5] + ".swaps.json"))
        d["_swaps"] = sw
        d["_swaps_text"] = f"{sw.get('loads', '?')} / {sw.get('evictions', '?')}"
    except (OSError, ValueError):
        pass
    return d

def load(m, s, k):
    """The best of a server's runs (highest aggregate tok/s among runs with
    no failed request; else the first run), with all runs' tok/s in _runs."""
    runs = []
    rep = 1
    while os.path.exists(p := os.path.join(run_dir, f"{m}-{s}-{k}.r{rep}.json")):
        runs.append(load_one(p))
        rep += 1
    if not runs:
        return None
    good = [d for d in runs if get(d, "requests", "ok") and not get(d, "requests", "failed")]
    best = max(good, key=lambda d: d.get("tokens_per_s") or 0) if good else runs[0]
    if len(runs) > 1:
        best["_runs"] = " / ".join("{:.1f}".format(d["tokens_per_s"]) if "tokens_per_s" in d else "err"
                                   for d in runs)
    return best

def get(d, *path):
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d

# label, path, higher_is_better, format
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

def cell(d, r):
    if d is None:
        return "not run"
    if "error" in d and "requests" not in d:
        return "**" + d["error"] + "**" if r is rows[0] else "–"
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
           f"{os.cpu_count()} CPUs · {threads} threads per server · git {rev or '?'} · raw data in `{os.path.relpath(run_dir, root)}`")
out.append("")
out.append("Ratio = corral / llama-server: above 1 is better for tok/s, below 1 is better for latencies (ms). "
           "Servers ran one at a time on the same machine; compare ratios, not absolute figures across runs. "
           f"The server under test alone keeps the 1-minute load average at or below its thread count ({threads}, "
           f"on {os.cpu_count()} CPUs); a load average well above that means other processes shared the CPUs "
           "and that column's figures are suspect.")
out.append("")
for m in models:
    for s in scen:
        sid, title = s[0], s[1]
        a, b = load(m, sid, "corral"), load(m, sid, "llama")
        if a is None and b is None:
            continue
        cfg = get(b, "config") or get(a, "config") or {}
        out.append(f"## {m} · {sid}: {title}")
        out.append("")
        if cfg:
            out.append(f"endpoint {cfg.get('endpoint', '?')}, {cfg.get('requests', '?')} requests measured "
                       f"after {cfg.get('warmup', '?')} warmup, concurrency {cfg.get('concurrency', '?')}")
            out.append("")
        srows = rows_s5 if sid == "s5" else rows
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
                       "(`spawning server instance`, `evicting idle LRU`).")
            out.append("")
        out.append("| metric | llama-server | corral | corral / llama-server |")
        out.append("|---|---:|---:|---:|")
        for r in srows:
            if r[1] == ("_runs",) and not (get(a, "_runs") or get(b, "_runs")):
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
then
    log "report generation failed; raw results are in $RUN_DIR"
    exit 1
fi
cp "$RUN_DIR/report.md" "$OUT/latest.md"
cat "$OUT/latest.md"
log "report: $OUT/latest.md (raw: $RUN_DIR)"
