#!/usr/bin/env bash
# install-deps.sh: install the Debian packages corral builds and tests with.
# Safe to run again: it installs only what is missing.
#   scripts/install-deps.sh           everything (build, tests, bench)
#   scripts/install-deps.sh --bench   only what bench/run.sh adds on top of a
#                                     build: wrk (scenario s6) and gnuplot (s7 plot)
#   scripts/install-deps.sh --fuzz    what `make fuzz` needs: the libraries and
#                                     clang with its libFuzzer runtime
set -euo pipefail
pkgs=(build-essential cmake git pkg-config ccache
      libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libinih-dev libcmocka-dev
      libwslay-dev nettle-dev
      python3-pytest python3-requests python3-websockets python3-jsonschema wrk gnuplot-nox nodejs npm
      chromium)
case "${1:-}" in
  "") ;;
  --bench) pkgs=(wrk gnuplot-nox) ;;
  --fuzz) pkgs=(cmake pkg-config libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libinih-dev libcmocka-dev
                clang libclang-rt-14-dev) ;;
  *) echo "usage: $0 [--bench|--fuzz]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian's packages; only ask apt if absent.
filtered=()
for p in "${missing[@]}"; do
  case "$p" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
  esac
  filtered+=("$p")
done
if [ ${#filtered[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${filtered[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${filtered[@]}" >/dev/null
fi
