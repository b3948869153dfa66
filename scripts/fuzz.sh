#!/usr/bin/env bash
# fuzz.sh: build the libFuzzer harnesses (clang, ASan + UBSan) and run each
# for a bounded time. `make fuzz` calls it.
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s; request config sse_in jsonrpc)
# New inputs are kept in $FUZZ_BUILD/corpus/TARGET (the seeds in
# tests/fuzz/corpus/TARGET are only read); a crash leaves its input in
# $FUZZ_BUILD/crash-* and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request config sse_in jsonrpc)
build=${FUZZ_BUILD:-build-fuzz}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCORRAL_FUZZ=ON -DCORRAL_LLAMA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCORRAL_WERROR=ON >/dev/null
cmake --build "$build" -j"$jobs" --target "${targets[@]/#/fuzz_}" >/dev/null
status=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  log="$build/fuzz_$t.log"
  echo "fuzz: $t for $secs s (log $log)"
  if ! (cd "$build" && "./tests/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="./crash-$t-" \
          "corpus/$t" "../tests/fuzz/corpus/$t") >"$log" 2>&1; then
    echo "fuzz: $t FOUND A FAILURE:" >&2
    grep -A30 -E "^==[0-9]+==ERROR|runtime error|deadly signal" "$log" | head -60 >&2 || tail -40 "$log" >&2
    status=1
  fi
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "fuzz: $t: ${runs:-?} executions, corpus $(ls "$build/corpus/$t" | wc -l) inputs"
done
exit $status
