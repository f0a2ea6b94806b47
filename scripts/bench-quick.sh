#!/usr/bin/env bash
# Runs every benchmark in quick mode: a smoke test for CI (they compile, run and print their
# tables; nothing is written to benches/results). Needs redis-server on PATH (see scripts/test.sh);
# the benches start their own servers on free loopback ports and never touch port 6379.
# Exits non-zero as soon as one bench fails.
#
# By default the benches are built in the test profile (unoptimized), with the same features as
# `./scripts/test.sh`, so they reuse every dependency that build compiled: an optimized build of
# the whole dependency tree is most of a cold CI run's time (330 s of 980 s, measured), and a
# smoke test needs none of it. Their numbers then mean nothing (each bench says so); measure with
# `cargo bench`. `--release` runs the same quick mode on the optimized `bench` profile.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "bench-quick: redis-server not found on PATH (./scripts/test.sh installs it)" >&2
    exit 1
fi

benches=(throughput recovery memory patterns overhead dedicated lanes cluster)
run=(cargo test --all-features)
case "${1:-}" in
    "") ;;
    --release) run=(cargo bench) ;;
    *)
        echo "usage: $0 [--release]" >&2
        exit 2
        ;;
esac

started=$SECONDS
targets=()
for bench in "${benches[@]}"; do targets+=(--bench "$bench"); done
"${run[@]}" --no-run "${targets[@]}"
for bench in "${benches[@]}"; do
    echo "--- ${run[*]} --bench $bench -- --quick" >&2
    "${run[@]}" --bench "$bench" -- --quick
done
echo "bench-quick: all benches passed in $((SECONDS - started)) s" >&2
