#!/usr/bin/env bash
# What building the agent and the kernel and network tests need beyond cargo, in one
# place (.ci/run and scripts/test.sh use it).
#   scripts/test-deps.sh --missing   prints the missing Debian/PyPI packages, one line
#   scripts/test-deps.sh --install   installs them (root; apt-get, pip and cargo install)
set -euo pipefail

missing_debian() {
    local need=()
    # building the agent itself: the kafka plugins' TLS and SASL SCRAM (the default
    # feature kafka-ssl) link the system OpenSSL, found with pkg-config
    command -v pkg-config >/dev/null || need+=(pkg-config)
    pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
    # conntrack tests in network namespaces, the tcp output's SYN-drop namespace
    command -v nft >/dev/null || need+=(nftables)
    command -v conntrack >/dev/null || need+=(conntrack)
    command -v ip >/dev/null || need+=(iproute2)
    # flowlogs_sockdiag: ss (iproute2) reads tcp_info independently; python3 runs the
    # client, server and the delaying TUN wire
    command -v ss >/dev/null || need+=(iproute2)
    command -v python3 >/dev/null || need+=(python3)
    # the dest_domains test's resolver in a namespace (the binary only, no service)
    command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
    # the monitoring tests check the Prometheus text with promtool and a real Prometheus
    command -v promtool >/dev/null || need+=(prometheus)
    # the tcp input's tests send with nc; scripts/netcat-demo.sh listens with it
    command -v nc >/dev/null || need+=(netcat-openbsd)
    # the syslog input's tests send with util-linux logger, the http input's with curl
    command -v logger >/dev/null || need+=(bsdutils)
    command -v curl >/dev/null || need+=(curl)
    # the systemd input's tests write real journal files with systemd-journal-remote;
    # the input loads libsystemd.so.0 at run time
    [ -x /lib/systemd/systemd-journal-remote ] || [ -x /usr/lib/systemd/systemd-journal-remote ] ||
        need+=(systemd-journal-remote)
    [ -n "$(/sbin/ldconfig -p 2>/dev/null | grep 'libsystemd\.so\.0 ')" ] || need+=(libsystemd0)
    echo "${need[@]:-}"
}

# The kafka tests' broker: tansu, a Kafka-compatible broker from crates.io, with its
# SQLite storage (a broker killed and restarted keeps what it acknowledged). About 8
# minutes to build on 2 cores, once per machine: skipped when present.
TANSU_VERSION=0.6.0
have_tansu() {
    command -v tansu >/dev/null || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]
}

# With AGENT_TANSU_BUILD set (CI), tansu builds in the background, niced, while the
# agent builds and the other tests run (they leave the CPU mostly idle); this file
# then says "building" or "done <exit code>", its log is beside it, and the kafka
# tests wait for it (tests/common/kafka.rs).
tansu_building() {
    [ -n "${AGENT_TANSU_BUILD:-}" ] && [ "$(cat "$AGENT_TANSU_BUILD" 2>/dev/null)" = building ]
}

missing_crates() {
    have_tansu || tansu_building || echo tansu
}

missing_pypi() {
    local need=()
    # independent msgpack decoder (tcp/forward outputs); a third-party Forward client
    python3 -c 'import msgpack' 2>/dev/null || need+=(msgpack)
    python3 -c 'import fluent.sender' 2>/dev/null || need+=(fluent-logger)
    # the kafka tests' independent client (librdkafka 2.x in the wheel)
    python3 -c 'import confluent_kafka' 2>/dev/null || need+=(confluent-kafka)
    # independent OTLP decoder (the opentelemetry output): the project's own protobuf classes
    python3 -c 'import opentelemetry.proto.collector.logs.v1.logs_service_pb2' 2>/dev/null ||
        need+=(opentelemetry-proto)
    # independent AWS SigV4 verifier (aws_auth of the HTTP outputs): AWS's Python signer
    python3 -c 'import botocore.auth' 2>/dev/null || need+=(botocore)
    echo "${need[@]:-}"
}

case "${1:-}" in
--missing)
    echo "$(missing_debian) $(missing_pypi) $(missing_crates)" | xargs
    ;;
--install)
    read -r -a deb <<<"$(missing_debian)"
    if [ ${#deb[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${deb[@]}"
    fi
    for p in $(missing_pypi); do
        python3 -m pip install -q "$p" || python3 -m pip install -q --break-system-packages "$p"
    done
    if ! have_tansu && ! tansu_building; then
        build=(cargo install -q --locked tansu --version "$TANSU_VERSION" --no-default-features --features libsql)
        if [ -n "${AGENT_TANSU_BUILD:-}" ]; then
            echo "test-deps: building the tansu broker $TANSU_VERSION in the background (log: $AGENT_TANSU_BUILD.log)"
            mkdir -p "$(dirname "$AGENT_TANSU_BUILD")"
            echo building >"$AGENT_TANSU_BUILD"
            (
                nice -n 19 "${build[@]}" >"$AGENT_TANSU_BUILD.log" 2>&1
                echo "done $?" >"$AGENT_TANSU_BUILD"
            ) </dev/null >/dev/null 2>&1 &
            disown
        else
            echo "test-deps: building the tansu broker $TANSU_VERSION (about 8 minutes on 2 cores, once)"
            "${build[@]}"
        fi
    fi
    ;;
*)
    echo "usage: $0 --missing | --install" >&2
    exit 2
    ;;
esac
