#!/usr/bin/env bash
# `make test`: every unit and integration test. As root, what the kernel and network
# tests need is installed first when missing (scripts/test-deps.sh, as CI does). Without
# root, or with tools missing, the tests that need them are skipped, named and counted.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

root=0
[ "$(id -u)" = 0 ] && root=1
missing=$(bash scripts/test-deps.sh --missing)
if [ -n "$missing" ] && [ $root = 1 ]; then
    echo "make test: installing what the kernel and network tests need: $missing"
    bash scripts/test-deps.sh --install
    missing=$(bash scripts/test-deps.sh --missing)
fi
if [ -z "$missing" ] && [ $root = 1 ]; then
    if [ "$(cat "${AGENT_TANSU_BUILD:-/nonexistent}" 2>/dev/null)" = building ]; then
        # The kafka broker is still building in the background (CI): every other test
        # first, which gives the build their idle time, then the kafka tests, which
        # wait for it.
        args=(--lib --bins)
        for f in tests/*.rs; do
            t=$(basename "$f" .rs)
            [ "$t" = kafka ] || args+=(--test "$t")
        done
        $CARGO test "${args[@]}"
        exec $CARGO test --test kafka
    fi
    exec $CARGO test --all-targets
fi

# Which test files need what (tests/<name>.rs).
declare -A needs=(
    [in_conntrack]="root nftables conntrack iproute2"
    [flowlogs]="root nftables conntrack iproute2"
    [flowlogs_sockdiag]="root nftables iproute2 python3"
    [flow_domains]="root nftables conntrack iproute2 dnsmasq-base"
    [out_tcp]="root nftables iproute2 msgpack"
    [http_monitoring]="prometheus"
    [in_tcp]="netcat-openbsd"
    [in_syslog]="bsdutils"
    [in_http]="curl"
    [in_forward]="fluent-logger msgpack"
    [out_forward]="msgpack"
    [in_systemd]="systemd-journal-remote libsystemd0"
    [kafka]="tansu confluent-kafka"
    [out_opentelemetry]="opentelemetry-proto"
    [aws_auth]="botocore"
    [out_cloudwatch_logs]="botocore"
    [filter_aws]="root nftables iproute2 botocore"
)
have() {
    local want
    for want in $1; do
        if [ "$want" = root ]; then
            [ $root = 1 ] || return 1
        elif [[ " $missing " == *" $want "* ]]; then
            return 1
        fi
    done
}
args=(--lib --bins)
skipped=()
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    if [ -n "${needs[$t]:-}" ] && ! have "${needs[$t]}"; then
        skipped+=("$t (needs ${needs[$t]})")
    else
        args+=(--test "$t")
    fi
done
if [ ${#skipped[@]} -gt 0 ]; then
    echo "make test: skipping ${#skipped[@]} test files; as root, 'make test' installs what they need${missing:+ ($missing)}:"
    printf '  %s\n' "${skipped[@]}"
fi
$CARGO test "${args[@]}"
if [ ${#skipped[@]} -gt 0 ]; then
    echo "make test: passed, but ${#skipped[@]} test files were skipped (listed above)"
fi
