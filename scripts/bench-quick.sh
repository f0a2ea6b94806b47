#!/usr/bin/env bash
# Runs every benchmark in quick mode (a smoke test for CI: they compile, run and print their
# tables; nothing is written to benches/results). Needs redis-server on PATH (see scripts/test.sh);
# the benches start their own servers on free loopback ports and never touch port 6379.
# Exits non-zero as soon as one bench fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "bench-quick: redis-server not found on PATH (./scripts/test.sh installs it)" >&2
    exit 1
fi

started=$SECONDS
cargo bench --no-run --bench throughput --bench recovery --bench memory --bench patterns --bench overhead --bench dedicated --bench lanes --bench cluster
for bench in throughput recovery memory patterns overhead dedicated lanes cluster; do
    echo "--- cargo bench --bench $bench -- --quick" >&2
    cargo bench --bench "$bench" -- --quick
done
echo "bench-quick: all benches passed in $((SECONDS - started)) s" >&2
