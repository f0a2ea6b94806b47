#!/usr/bin/env bash
# Proves that the Grafana dashboard and the alert rules in grafana/ read metrics the binary really
# exports:
#   1. installs the Debian package `prometheus` (prometheus + promtool) if missing;
#   2. builds the binary, starts its own redis-server and the binary on free ports, makes some
#      traffic, and lints `/metrics` with `promtool check metrics`;
#   3. starts its own Prometheus (own port, config and data dir in a temp dir; 1 s scrapes, the
#      alert rules loaded), waits for samples, then runs every `expr` of
#      grafana/redis-supervisor.json through the query API and fails on any empty or failed
#      result; every alert rule must parse and evaluate, and `promtool check rules` must pass.
#
# It never touches ports 6379, 9090 or 9180 nor any process it did not start (a system Prometheus
# or Redis service started by a package install is left alone), and stops what it started on exit.
#
# Environment:
#   CHECK_METRICS_TARGET=HOST:PORT  check an already running exporter instead of building and
#                                   starting redis-server and the binary (no traffic is made)
#   KEEP_TMP=1                      keep the temp dir (logs, Prometheus config and data)
#   CHECK_METRICS_VERBOSE=1         print every query with its first values
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
dashboard="$root/grafana/redis-supervisor.json"
alerts="$root/grafana/alerts.yml"
started=$SECONDS

say() { echo "check-metrics [+$((SECONDS - started))s]: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# --- cleanup: stop only the processes this script started, newest first -----------------------
pids=()
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-metrics.XXXXXX")

alive() { # running and not a zombie
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat != *") Z "* ]]
}

cleanup() {
    local rc=$? i pid n
    trap - EXIT INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for ((n = 0; n < 50; n++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "process $pid did not stop after SIGTERM: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 ]]; then
        for log in "$tmp/redis-supervisor.log" "$tmp/redis.log"; do
            [[ -s $log ]] || continue
            echo "----- last lines of $(basename "$log") -----" >&2
            tail -n 20 "$log" >&2
        done
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        say "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools ----------------------------------------------------------------------------------------
packages=()
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    packages+=(prometheus)
fi
if [[ -z ${CHECK_METRICS_TARGET:-} ]] && ! command -v redis-server >/dev/null 2>&1; then
    packages+=(redis-server)
fi
if [[ ${#packages[@]} -gt 0 ]]; then
    say "installing Debian package(s): ${packages[*]}"
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get is not available; install ${packages[*]} yourself and rerun"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "not root and no sudo; install ${packages[*]} yourself"
        sudo=(sudo)
    fi
    # The package may start a system service (Prometheus on :9090, Redis on :6379). It is left
    # alone: this script uses its own instances on free ports. A postinst that fails only because
    # that service cannot start is tolerated as long as the binaries are installed.
    "${sudo[@]}" apt-get update >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${packages[@]}" >&2 ||
        say "warning: apt-get install exited non-zero; checking whether the binaries are there"
fi
for tool in prometheus promtool curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH"
done
say "using $(prometheus --version 2>&1 | head -n 1)"

# --- free ports (never 6379, 9090, 9180) ----------------------------------------------------------
read -r redis_port app_port prom_port < <(python3 - <<'PY'
import socket
socks, ports = [], []
while len(ports) < 3:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    port = s.getsockname()[1]
    if port not in (6379, 9090, 9180):
        ports.append(port)
print(*ports)
for s in socks:
    s.close()
PY
)
[[ -n ${prom_port:-} ]] || die "could not pick free ports"

# Polls `$@` every 0.1 s until it succeeds or `$1` seconds have passed.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# --- the exporter: redis-server + the binary, or an external target -------------------------------
if [[ -n ${CHECK_METRICS_TARGET:-} ]]; then
    target=$CHECK_METRICS_TARGET
    say "checking the external target $target (no build, no redis-server, no traffic)"
else
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found on PATH"
    # --all-features: the same build `cargo test --all-features` (CI) already made of the binary.
    say "cargo build --all-features --bin redis-supervisor"
    cargo build --quiet --all-features --bin redis-supervisor
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/redis-supervisor"
    [[ -x $bin ]] || die "$bin was not built"

    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$tmp" >"$tmp/redis.log" 2>&1 &
    pids+=($!)
    wait_for 10 redis-cli -p "$redis_port" ping >/dev/null 2>&1 ||
        die "redis-server did not answer on port $redis_port"

    target="127.0.0.1:$app_port"
    REDIS_URL="redis://127.0.0.1:$redis_port" LISTEN_ADDR="$target" \
        REDIS_HEALTH_INTERVAL_MS=200 REDIS_HEALTH_TIMEOUT_MS=200 REDIS_INFO_INTERVAL_MS=500 \
        RUST_LOG=warn \
        "$bin" >"$tmp/redis-supervisor.log" 2>&1 &
    app_pid=$!
    pids+=("$app_pid")
    health_ok() {
        alive "$app_pid" || die "redis-supervisor exited at start"
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$target/health") == 200 ]]
    }
    wait_for 20 health_ok || die "GET http://$target/health did not answer 200 within 20 s"
    say "redis-supervisor is up on $target (redis-server on $redis_port)"

    # Traffic straight to the server so the INFO counters move: hits, misses, an expiry.
    rcli() { redis-cli -p "$redis_port" "$@" >/dev/null; }
    rcli SET check:hit value
    rcli SET check:other value
    rcli GET check:hit
    rcli GET check:hit
    rcli GET check:missing
    rcli SET check:short value
    rcli PEXPIRE check:short 100
    # ... and on while Prometheus scrapes, so rates over a 5 s window are not all zero.
    for args in "GET check:hit" "GET check:missing" "SET check:volatile v PX 50"; do
        # shellcheck disable=SC2086 # word splitting of $args is intended
        redis-cli -p "$redis_port" -r -1 -i 0.2 $args >/dev/null 2>&1 &
        pids+=($!)
    done
fi

# --- our own Prometheus (it starts scraping while promtool runs) ----------------------------------
cat >"$tmp/prom.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $alerts
scrape_configs:
  - job_name: redis-supervisor
    metrics_path: /metrics
    static_configs:
      - targets: ["$target"]
EOF
prom="http://127.0.0.1:$prom_port"
prometheus --config.file="$tmp/prom.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

# --- promtool check metrics -----------------------------------------------------------------------
curl -sf "http://$target/metrics" >"$tmp/metrics.txt" || die "GET http://$target/metrics failed"
[[ -s $tmp/metrics.txt ]] || die "GET http://$target/metrics returned an empty body"
lint_rc=0
promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool-metrics.out" 2>&1 || lint_rc=$?
if [[ $lint_rc -ne 0 || -s $tmp/promtool-metrics.out ]]; then
    cat "$tmp/promtool-metrics.out" >&2
    die "promtool check metrics failed on /metrics (exit $lint_rc)"
fi
say "promtool check metrics: /metrics is clean ($(grep -c '^[a-zA-Z_]' "$tmp/metrics.txt") samples)"

# --- promtool check rules -------------------------------------------------------------------------
promtool check rules "$alerts" >"$tmp/promtool-rules.out" 2>&1 || {
    cat "$tmp/promtool-rules.out" >&2
    die "promtool check rules $alerts failed"
}
say "promtool check rules: $(grep -o '[0-9]* rules found' "$tmp/promtool-rules.out")"

prom_ready() { curl -sf "$prom/-/ready" >/dev/null 2>&1; }
wait_for 30 prom_ready || {
    tail -n 20 "$tmp/prometheus.log" >&2
    die "Prometheus did not become ready on $prom"
}

# Instant query; prints the first value of the first series ("" when the result is empty).
first_value() {
    curl -sf "$prom/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
r = json.load(sys.stdin).get("data", {}).get("result", [])
print(r[0]["value"][1] if r else "")'
}
enough_samples() {
    [[ $(first_value 'up{job="redis-supervisor"}') == 1 ]] &&
        [[ $(first_value 'count_over_time(up{job="redis-supervisor"}[1m])') -ge 5 ]]
}
wait_for 30 enough_samples ||
    die "Prometheus has not scraped $target successfully 5 times within 30 s"
say "Prometheus on $prom has scraped $target 5 times"

# --- every dashboard query and every alert rule ---------------------------------------------------
expect=1
[[ -z ${CHECK_METRICS_TARGET:-} ]] || expect=0
CHECK_METRICS_EXPECT=$expect python3 - "$prom" "$dashboard" <<'PY'
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request

prom, dashboard_path = sys.argv[1], sys.argv[2]
SUBST = [("$__rate_interval", "5s"), ("${__rate_interval}", "5s"), ("$__interval", "5s"),
         ("${__interval}", "5s"), ("$__range", "1m"), ("${__range}", "1m"),
         ("${client}", ".*"), ("$client", ".*"), ("${instance}", ".*"), ("$instance", ".*")]
FILTERS = ('client=~"$client"', 'instance=~"$instance"')


def get(path, **params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 400/422 carry a JSON error body
        try:
            return json.load(e)
        except Exception:
            return {"status": "error", "error": f"HTTP {e.code}"}


VERBOSE = os.environ.get("CHECK_METRICS_VERBOSE") == "1"


def query(expr):
    """(number of series, error or None)."""
    body = get("/api/v1/query", query=expr)
    if body.get("status") != "success":
        return 0, body.get("error", "unknown error")
    result = body["data"]["result"]
    if VERBOSE:
        values = [r["value"][1] for r in result[:4]]
        print(f"  {len(result):3} series {values} <- {expr}", file=sys.stderr)
    return len(result), None


def walk(node, where):
    """Yields (where, expr) for every "expr" in the dashboard JSON."""
    if isinstance(node, dict):
        title = node.get("title")
        here = f"{where} / {title}" if title and "type" in node else where
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield f"{here} [{node.get('refId', '?')}]", value
            else:
                yield from walk(value, here)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, where)


def unfiltered_selectors(expr):
    """Metric selectors lacking the $client / $instance filters (label lists in by(), on()... are
    stripped first, so label names such as redis_version are not taken for metrics)."""
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    bad = []
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", stripped):
        name, matchers = m.group(1), m.group(2) or ""
        if not name.startswith("redis_"):
            continue
        if not all(f in matchers for f in FILTERS):
            bad.append(name)
    return bad


with open(dashboard_path) as f:
    dash = json.load(f)

failures = []
if not any(i.get("name") == "DS_PROMETHEUS" for i in dash.get("__inputs", [])):
    failures.append("dashboard: no __inputs entry DS_PROMETHEUS")

exprs = list(walk(dash.get("panels", []), "panel"))
if not exprs:
    failures.append("dashboard: no expr found")
checks = []
for where, expr in exprs:
    for name in unfiltered_selectors(expr):
        failures.append(f'{where}: {name} lacks client=~"$client", instance=~"$instance": {expr}')
    concrete = expr
    for var, value in SUBST:
        concrete = concrete.replace(var, value)
    if "$" in concrete:
        failures.append(f"{where}: unknown template variable left in: {concrete}")
        continue
    checks.append((where, concrete))

# Template variables: label_values(SELECTOR, LABEL) must find at least one value.
for var in dash.get("templating", {}).get("list", []):
    if var.get("type") != "query":
        continue
    q = var.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", q)
    if not m:
        failures.append(f"variable {var.get('name')}: not label_values(selector, label): {q}")
        continue
    sel = m.group(1)
    for v, value in SUBST:
        sel = sel.replace(v, value)
    checks.append((f"variable ${var['name']}", f"count by ({m.group(2)}) ({sel})"))

# With our own redis-server and traffic, the values must also make sense, not merely exist.
EXPECT = [
    'redis_client_up == 1',
    'redis_client_state{state="up"} == 1',
    'redis_client_connect_attempts_total{outcome="success"} >= 1',
    # Health probes are counted apart from callers' commands (the binary makes no commands).
    'increase(redis_client_probes_total{outcome="ok"}[1m]) > 0',
    'redis_client_commands_total{command="ping"} == 0',
    'increase(redis_client_ping_duration_seconds_count[1m]) > 0',
    'redis_client_state{state="not_ready"} == 0',
    'redis_up == 1',
    'redis_instance_info{redis_version!="", role="master", redis_mode="standalone"} == 1',
    'redis_uptime_in_seconds > 0',
    'redis_memory_used_bytes > 0',
    'redis_connected_clients >= 1',
    'redis_keyspace_misses_total > 0',
    'increase(redis_keyspace_hits_total[1m]) > 0',  # INFO is re-read, not only at connect
    'increase(redis_expired_keys_total[1m]) > 0',
    # The binary uses no pattern: their series exist from the start, at 0 (never "no data").
    'redis_client_degraded_ops_total{op="cache_get"} == 0',
    'redis_client_degraded_ops_total{op="ratelimit_check"} == 0',
    'redis_client_ratelimit_checks_total{decision="degraded"} == 0',
    'redis_client_cache_lookups_total{result="hit"} == 0',
    'redis_client_cache_loads_total{outcome="timeout"} == 0',
    'redis_client_cache_corrupt_total == 0',
    # No subscription, no blocking command, no transaction: the dedicated connections are never opened.
    'redis_client_pubsub_up == 0',
    'redis_client_pubsub_lagged_total == 0',
    'redis_client_blocking_connections == 0',
    'redis_client_blocking_in_use == 0',
    'redis_client_leased_connections == 0',
    'redis_client_leased_in_use == 0',
    'redis_client_failovers_total == 0',
    'redis_client_lane_up{lane="0"} == 1',
]
expectations = []
if os.environ.get("CHECK_METRICS_EXPECT") == "1":
    expectations = [("expectation", e) for e in EXPECT]
    checks += expectations

# Run the queries; give empty ones a few seconds more (a rate window that is still filling).
pending = list(checks)
errors = {}
deadline = time.monotonic() + 10
while True:
    if VERBOSE:
        print(f"querying {len(pending)} expressions", file=sys.stderr)
    still = []
    for where, expr in pending:
        n, err = query(expr)
        if err or n == 0:
            errors[(where, expr)] = err or "empty result"
            still.append((where, expr))
        else:
            errors.pop((where, expr), None)
    pending = still
    if not pending or time.monotonic() > deadline:
        break
    time.sleep(1)
for where, expr in pending:
    failures.append(f"{where}: {errors[(where, expr)]}: {expr}")
ok = len(checks) - len(expectations) - sum(1 for c in pending if c[0] != "expectation")
expect_ok = len(expectations) - sum(1 for c in pending if c[0] == "expectation")

# Alert rules: Prometheus loaded the file; each rule must have been evaluated without error, and
# its expression must parse and run through the query API (an empty result is fine for alerts).
rules, deadline = [], time.monotonic() + 10
while True:
    body = get("/api/v1/rules")
    rules = [r for g in body.get("data", {}).get("groups", []) for r in g.get("rules", [])]
    if rules and not any(r.get("lastEvaluation", "0001").startswith("0001") for r in rules):
        break
    if time.monotonic() > deadline:
        break
    time.sleep(0.5)
if not rules:
    failures.append("alerts.yml: Prometheus loaded no rules from it")
alerts_ok = 0
for r in rules:
    name = r.get("name", "?")
    problems = []
    if r.get("health") != "ok":
        problems.append(f"rule health {r.get('health')!r}: {r.get('lastError', '')}")
    body = get("/api/v1/query", query=r.get("query", ""))
    if body.get("status") != "success":
        problems.append(f"query error: {body.get('error')}")
    if problems:
        failures.append(f"alert {name}: {'; '.join(problems)}: {r.get('query')}")
    else:
        alerts_ok += 1

for line in failures:
    print(f"FAILED {line}", file=sys.stderr)
failed = len(checks) - len(expectations) - ok
print(f"metrics check: {ok} queries returned data, {failed} failed; "
      + (f"{expect_ok}/{len(expectations)} value expectations hold; " if expectations else "")
      + f"{alerts_ok}/{len(rules)} alert rules evaluate"
      + (f"; {len(failures)} problem(s)" if failures else ""))
sys.exit(1 if failures else 0)
PY

say "passed in $((SECONDS - started)) s"
