#!/usr/bin/env bash
# The project's single test command: makes sure `redis-server` is installed (the test fixture spawns its
# own servers on random ports), then runs every test with every feature. Extra arguments go to
# `cargo test`, e.g. `./scripts/test.sh --test it fixture:: -- --nocapture`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found on PATH: installing the Debian/Ubuntu package redis-server" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: apt-get is not available; install redis-server (Redis >= 6) yourself and rerun" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: not root and no sudo; install redis-server yourself and rerun" >&2
            exit 1
        fi
    fi
    # The package may start a system service on 127.0.0.1:6379. It is left alone: the tests never use
    # port 6379 and never start, stop or signal any Redis they did not spawn themselves.
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "error: redis-server still not on PATH after installing the package" >&2
        exit 1
    fi
fi

echo "using $(redis-server --version)" >&2
exec cargo test --all-features "$@"
