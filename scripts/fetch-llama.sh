#!/usr/bin/env bash
# fetch-llama.sh DEST: put llama.cpp's source tree (pinned) at DEST.
#
# The source comes from the npm package node-llama-cpp, which carries a git
# bundle of llama.cpp (llama/gitRelease.bundle). The unpacked tree is kept in
# a cache outside the clone (CORRAL_CACHE_DIR, default ~/.cache/corral) so a
# second clone does not fetch it again; DEST becomes a copy of that tree.
set -euo pipefail

NODE_LLAMA_CPP_VERSION="${NODE_LLAMA_CPP_VERSION:-3.22.1}"
dest="${1:?usage: fetch-llama.sh DEST}"
cache="${CORRAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/corral}"
src="$cache/llama.cpp-node-$NODE_LLAMA_CPP_VERSION"

if [ -f "$dest/include/llama.h" ]; then exit 0; fi

if [ ! -f "$src/include/llama.h" ]; then
  command -v npm >/dev/null || { echo "fetch-llama: npm is required to fetch llama.cpp's source" >&2; exit 1; }
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "fetch-llama: npm pack node-llama-cpp@$NODE_LLAMA_CPP_VERSION" >&2
  (cd "$tmp" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" >/dev/null)
  tar -xzf "$tmp"/node-llama-cpp-*.tgz -C "$tmp" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json
  git clone --quiet "$tmp/package/llama/gitRelease.bundle" "$tmp/llama.cpp" 2>/dev/null
  cp "$tmp/package/llama/llama.cpp.info.json" "$tmp/llama.cpp/"
  rm -rf "$tmp/llama.cpp/.git"
  rm -rf "$src"
  mv "$tmp/llama.cpp" "$src"
fi

mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp"
cp -a "$src" "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "fetch-llama: llama.cpp $(sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' "$dest/llama.cpp.info.json") at $dest" >&2
