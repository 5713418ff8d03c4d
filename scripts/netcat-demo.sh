#!/usr/bin/env bash
# The networking demo of Fluent Bit's docs (administration/networking.md), with
# conf/fluent-bit.conf unchanged: `random` (5 samples) -> `tcp` json_lines -> `nc -l`.
#
# Shows every record arriving at nc with its arrival time, then the agent closing the
# idle connection net.keepalive_idle_timeout (10 s) after the last record, which ends
# nc. Real Fluent Bit delivers only 3 of the 5 records here: its 2 tcp workers open 2
# connections and nc reads just one (../shared/spec/fluent-bit-observed.md §4.b). The
# agent's workers share one connection pool, so all 5 arrive on one connection.
#
# Usage: scripts/netcat-demo.sh   (AGENT=path/to/agent to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nc >/dev/null || { echo "nc is required (Debian: apt-get install netcat-openbsd)" >&2; exit 1; }
if [ -z "${AGENT:-}" ]; then
    cargo build --quiet
    AGENT=target/debug/agent
fi
work=$(mktemp -d)
agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill -INT "$agent_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%H:%M:%S.%3N; }

# -d: nc never reads its stdin; it exits when the agent closes the connection.
( nc -d -l 127.0.0.1 9090; echo "$?" > "$work/nc.rc" ) > "$work/received" &
nc_pid=$!
# Wait for the listener (the agent would otherwise retry after a backoff).
for _ in $(seq 100); do
    ss -ltn 'sport = :9090' | grep -q LISTEN && break
    sleep 0.05
done

echo "[$(now)] nc is listening on 127.0.0.1:9090; starting: $AGENT -c conf/fluent-bit.conf"
"$AGENT" -c conf/fluent-bit.conf 2> "$work/agent.log" &
agent_pid=$!

seen=0
last=
while kill -0 "$nc_pid" 2>/dev/null; do
    n=$(wc -l < "$work/received")
    while [ "$seen" -lt "$n" ]; do
        seen=$((seen + 1))
        last=$(date +%s.%N)
        echo "[$(now)] nc received: $(sed -n "${seen}p" "$work/received")"
    done
    sleep 0.02
done
wait "$nc_pid" || true
n=$(wc -l < "$work/received")
while [ "$seen" -lt "$n" ]; do
    seen=$((seen + 1))
    echo "[$(now)] nc received: $(sed -n "${seen}p" "$work/received")"
done
closed=$(date +%s.%N)
echo "[$(now)] the agent closed the connection; nc exited (rc $(cat "$work/nc.rc"))"
if [ -n "$last" ]; then
    awk -v c="$closed" -v l="$last" 'BEGIN { printf "idle time between the last record and the close: %.1f s (net.keepalive_idle_timeout 10)\n", c - l }'
fi
kill -INT "$agent_pid"
wait "$agent_pid" && rc=0 || rc=$?
agent_pid=
echo "records received by nc: $n of 5; agent exit code after SIGINT: $rc"
echo "--- agent log ---"
cat "$work/agent.log"
[ "$n" -eq 5 ]
