# Container image for conf/kubernetes/daemonset.yaml: docker build -t agent:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The default features include kafka-ssl (Kafka over TLS and SASL SCRAM), which links
# OpenSSL: the build image has libssl-dev and pkg-config, the runtime image libssl3.
RUN cargo build --release

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/agent /usr/local/bin/agent
COPY conf /etc/agent/examples
# The standard parsers where Fluent Bit's image has them (Helm charts and ConfigMaps
# name this path in parsers_file).
COPY conf/parsers.conf conf/parsers_multiline.conf /fluent-bit/etc/
EXPOSE 2020
ENTRYPOINT ["/usr/local/bin/agent"]
CMD ["-c", "/etc/agent/fluent-bit.conf"]
