#!/usr/bin/env bash
# bench/soak.sh -- one corral under mixed load for a long time; RSS and
# open file descriptors sampled every 10 s must stay flat after warm-up.
#
# Starts `corral serve` with three generated tiny models and room for two
# (so requests to the third swap the herd), then runs bench/soak.py: streams
# read to the end and dropped midway, whole completions and chats,
# embeddings, bad requests, half-closed requests, model swaps, admin loads
# and forced unloads, /health and /metrics. Results in bench/out/soak-*/
# (samples.csv, report.json, the server's log) and a PASS/FAIL line.
#
# Usage: bench/soak.sh [--duration SECONDS] [--workers N] [--no-build]
#   --duration S   how long to load the server (default 3600; `make soak SOAK_TIME=300`)
#   --interval S   seconds between samples (default 10)
#   --workers N    client threads (default 6)
#   --no-build     use the binaries in the build folder as they are
# Environment: BUILD_DIR (default <repo>/build), CORRAL_ARGS (extra serve args).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
DURATION=3600 INTERVAL=10 WORKERS=6 DO_BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) shift; DURATION=${1:?} ;;
        --interval) shift; INTERVAL=${1:?} ;;
        --workers) shift; WORKERS=${1:?} ;;
        --no-build) DO_BUILD=0 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "soak: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$DO_BUILD" = 1 ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" >/dev/null && cmake --build "$BUILD_DIR" -j"$(nproc)" --target corral corral-mkmodel >/dev/null || exit 1
fi
OUT=$ROOT/bench/out/soak-$(date +%Y%m%d-%H%M%S)
MODELS=$ROOT/bench/out/soak-models
mkdir -p "$OUT" "$MODELS"
for m in a:41 b:42 c:43; do
    id=${m%%:*} seed=${m##*:}
    [ -f "$MODELS/$id.gguf" ] || "$BUILD_DIR/corral-mkmodel" --out "$MODELS/$id.gguf" --dim 64 --layers 2 --ffn 128 \
        --heads 4 --kv-heads 2 --seed "$seed" >/dev/null || exit 1
done
"$BUILD_DIR/corral" serve --model a="$MODELS/a.gguf" --model b="$MODELS/b.gguf" --model c="$MODELS/c.gguf" \
    --preload a --preload b --max-models 2 --parallel 2 --max-concurrent 4 --ctx 512 --threads 1 \
    --queue-size 16 --port 0 --state-dir "$OUT/state" ${CORRAL_ARGS:-} >"$OUT/stdout" 2>"$OUT/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null' EXIT
PORT=
for _ in $(seq 1 300); do
    PORT=$(sed -n 's/^corral: listening on port //p' "$OUT/stdout" 2>/dev/null)
    [ -n "$PORT" ] && break
    kill -0 $PID 2>/dev/null || { echo "soak: the server did not start:" >&2; tail -20 "$OUT/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$PORT" ] || { echo "soak: the server did not start" >&2; exit 1; }
echo "soak: corral pid $PID on port $PORT for $DURATION s; results in $OUT"
/usr/bin/python3 "$ROOT/bench/soak.py" --url "http://127.0.0.1:$PORT" --pid $PID --duration "$DURATION" \
    --interval "$INTERVAL" --workers "$WORKERS" --out "$OUT" | tee "$OUT/report.txt"
rc=${PIPESTATUS[0]}
kill -TERM $PID 2>/dev/null
wait $PID
src=$?
trap - EXIT
[ $src -eq 0 ] || { echo "soak: the server exited with $src" >&2; rc=1; }
if grep -qE "runtime error|AddressSanitizer|LeakSanitizer|pool: bug" "$OUT/server.log"; then
    echo "soak: the server log reports a bug:" >&2
    grep -E "runtime error|AddressSanitizer|LeakSanitizer|pool: bug" "$OUT/server.log" | head >&2
    rc=1
fi
exit $rc
