#!/usr/bin/env bash
# make demo: flow logs from real traffic, in a throw-away network namespace (root).
# Creates namespace agent-demo with three "pods" on lo (conf/endpoints.json), an nft
# rule that logs and drops traffic to port 5432, runs the agent on conntrack + nflog →
# flow_aggregate (2 s intervals), generates allowed and denied connections, prints
# the flow logs, and removes the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, conntrack)" >&2; exit 1; }
NS=agent-demo
AGENT=${AGENT:-target/debug/agent}
tmp=$(mktemp -d)
cleanup() { kill "${pid:-}" 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
for a in 10.1.0.5 10.1.0.6 10.1.0.7; do ip -n "$NS" addr add "$a/32" dev lo; done
ip netns exec "$NS" nft add table inet demo
ip netns exec "$NS" nft add chain inet demo out '{ type filter hook output priority 0; }'
# Conntrack only runs in a namespace where a rule needs it (on Kubernetes nodes, NAT does).
ip netns exec "$NS" nft add rule inet demo out ct state new counter
ip netns exec "$NS" nft add rule inet demo out tcp dport 5432 log group 5 prefix '"DPE0|np/policy-demo/default.deny-db"' drop
ip netns exec "$NS" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=1

cat > "$tmp/demo.conf" <<CONF
[SERVICE]
    flush 0.5
    log_level warn
[INPUT]
    name conntrack
    netns /var/run/netns/$NS
    sample_interval 1s
    enable_accounting on
[INPUT]
    name nflog
    netns /var/run/netns/$NS
    group 5
[FILTER]
    name flow_aggregate
    match *
    flush_interval 2s
    flush_jitter_percent 0
    endpoints_file conf/endpoints.json
    include_policies on
[OUTPUT]
    name stdout
    match flowlogs
    format json_lines
    json_date_key false
CONF
"$AGENT" -c "$tmp/demo.conf" > "$tmp/flowlogs.jsonl" &
pid=$!
sleep 1
echo "Generating: 3 connections access-* -> nginx:80 (allowed), 1 to nginx:5432 (denied)..."
ip netns exec "$NS" python3 - <<'PY'
import socket
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("10.1.0.7", 80)); srv.listen()
for src, up, down in [("10.1.0.5", 300, 700), ("10.1.0.6", 500, 1100), ("10.1.0.5", 900, 100)]:
    c = socket.socket(); c.bind((src, 0)); c.connect(("10.1.0.7", 80)); s, _ = srv.accept()
    c.sendall(b"u" * up); s.recv(up); s.sendall(b"d" * down); c.recv(down); c.close(); s.close()
d = socket.socket(); d.bind(("10.1.0.5", 0)); d.settimeout(1)
try: d.connect(("10.1.0.7", 5432))
except OSError: pass
PY
sleep 6
kill -TERM "$pid"; wait "$pid" || true
pid=
echo "Flow logs:"
python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(json.dumps({k: r[k] for k in ("start_time","end_time","source_name_aggr","dest_name_aggr","dest_port","proto","action","reporter","policies","bytes_in","bytes_out","num_flows","num_flows_started","num_flows_completed")}))' "$tmp/flowlogs.jsonl"
