#!/usr/bin/env bash
# Conformance test of corral against the official OpenAI Node SDK.
#
# Installs the pinned SDK (package-lock.json) if it is missing or stale, starts
# corral on a free port with the tiny test model, runs conformance.test.mjs
# with node's built-in test runner and stops corral again, whatever happens.
# The exit status is the test result.
#
# Environment:
#   CORRAL_BIN          corral binary        (default <repo>/build/corral)
#   CORRAL_TEST_MODEL   GGUF to serve        (default <repo>/build/models/tiny.gguf)
#   CORRAL_SDK_DIR      optional directory (e.g. under the build tree) to hold
#                       node_modules; by default tests/sdk/node_modules is used
#                       (git-ignored, never committed)
#   CORRAL_SDK_START_TIMEOUT  seconds to wait for corral to listen (default 60)
set -euo pipefail

SDK_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SDK_SRC/../.." && pwd -P)"

CORRAL_BIN="${CORRAL_BIN:-$REPO_ROOT/build/corral}"
CORRAL_TEST_MODEL="${CORRAL_TEST_MODEL:-$REPO_ROOT/build/models/tiny.gguf}"
START_TIMEOUT="${CORRAL_SDK_START_TIMEOUT:-60}"
API_KEY="sdk-test-key"

log() { printf 'sdk: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found"
command -v npm >/dev/null 2>&1 || die "npm not found"
[ -x "$CORRAL_BIN" ] || die "corral binary not found or not executable: $CORRAL_BIN"
[ -f "$CORRAL_TEST_MODEL" ] || die "test model not found: $CORRAL_TEST_MODEL"

# --- dependencies ------------------------------------------------------------
# With CORRAL_SDK_DIR the manifest, lock file and test script are copied there
# and the test runs from that copy, so that `import 'openai'` resolves against
# that directory's node_modules and the source tree stays clean.
if [ -n "${CORRAL_SDK_DIR:-}" ]; then
    mkdir -p "$CORRAL_SDK_DIR"
    WORK_DIR="$(cd "$CORRAL_SDK_DIR" && pwd -P)"
else
    WORK_DIR="$SDK_SRC"
fi
if [ "$WORK_DIR" != "$SDK_SRC" ]; then
    cp "$SDK_SRC/package.json" "$SDK_SRC/package-lock.json" "$SDK_SRC/conformance.test.mjs" "$WORK_DIR/"
fi

lock_sum="$(sha256sum "$SDK_SRC/package-lock.json" | cut -d' ' -f1)"
stamp="$WORK_DIR/node_modules/.corral-lock-sha256"
if [ ! -f "$WORK_DIR/node_modules/openai/package.json" ] || [ ! -f "$stamp" ] ||
   [ "$(cat "$stamp")" != "$lock_sum" ]; then
    log "installing the OpenAI SDK into $WORK_DIR/node_modules"
    (cd "$WORK_DIR" && npm ci --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed (is the npm registry reachable?)"
    printf '%s\n' "$lock_sum" > "$stamp"
fi
log "openai SDK $(node -p 'require(process.argv[1]).version' "$WORK_DIR/node_modules/openai/package.json"), node $(node --version)"

# --- server ------------------------------------------------------------------
TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/corral-sdk.XXXXXX")"
SERVER_PID=""
NODE_PID=""
cleanup() {
    local rc=$?
    if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
        kill -TERM "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$TMP_DIR/corral.err" ]; then
        log "last lines of the corral log:"
        tail -n 40 "$TMP_DIR/corral.err" >&2 || true
    fi
    rm -rf "$TMP_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$CORRAL_BIN" serve --model "tiny=$CORRAL_TEST_MODEL" --port 0 --api-key "$API_KEY" \
    --parallel 4 --ctx 512 >"$TMP_DIR/corral.out" 2>"$TMP_DIR/corral.err" &
SERVER_PID=$!

PORT=""
deadline=$((SECONDS + START_TIMEOUT))
while [ -z "$PORT" ]; do
    PORT="$(sed -n 's/^corral: listening on port \([0-9][0-9]*\).*$/\1/p' "$TMP_DIR/corral.out" | head -n 1)"
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { wait "$SERVER_PID" || true; die "corral exited before listening"; }
    [ "$SECONDS" -lt "$deadline" ] || die "corral did not report a port within ${START_TIMEOUT}s"
    sleep 0.1
done
log "corral (pid $SERVER_PID) listening on port $PORT"

# --- tests -------------------------------------------------------------------
# node runs in the background so that a signal (ctest timeout) runs the trap
# at once and stops both node and corral.
CORRAL_SDK_BASE_URL="http://127.0.0.1:$PORT/v1" CORRAL_SDK_API_KEY="$API_KEY" \
CORRAL_SDK_SERVER_PID="$SERVER_PID" \
    node --test "$WORK_DIR/conformance.test.mjs" &
NODE_PID=$!
rc=0
wait "$NODE_PID" || rc=$?
NODE_PID=""

# (a crashed child stays a zombie until waited for, so look at its state)
state="$(ps -o stat= -p "$SERVER_PID" 2>/dev/null || true)"
if [ -z "$state" ] || [ "${state#Z}" != "$state" ]; then
    log "corral is no longer running after the tests (crashed?)"
    [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
