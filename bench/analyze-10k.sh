#!/usr/bin/env bash
# Loads and analyzes 10,000 resources with a release build of trellis; prints the wall time.
# Usage: bench/analyze-10k.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
python3 bench/gen_resources.py "$dir" "$n"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/trellis"
if command -v hyperfine >/dev/null 2>&1; then
  hyperfine --warmup 1 --runs 5 -i "$bin analyze $dir"
else
  for i in 1 2 3; do
    /usr/bin/time -f "run $i: %e s wall, %M KiB max RSS" "$bin" analyze "$dir" >/dev/null 2>/tmp/trellis-bench.err || true
    tail -1 /tmp/trellis-bench.err
  done
fi
