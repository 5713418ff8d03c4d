//! The `net.*` property tables and their typed form. Every networked output merges
//! [`NET_PROPS`] (and [`crate::net::tls::TLS_PROPS`]) into its own table; server inputs
//! will merge [`DOWNSTREAM_NET_PROPS`].
//! Fluent Bit: src/flb_upstream.c (`upstream_net[]`), src/flb_downstream.c
//! (`downstream_net[]`), src/flb_network.c (`flb_net_setup_init`).

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{ConfigError, PropKind, PropSpec, Props};

/// Upstream (client) properties, Fluent Bit's names and defaults.
pub const NET_PROPS: &[PropSpec] = &[
    PropSpec::new(
        "net.dns.mode",
        PropKind::Str,
        None,
        "DNS transport: UDP (the system resolver's) or TCP (not supported: a config error).",
    ),
    PropSpec::new(
        "net.dns.resolver",
        PropKind::Str,
        None,
        "DNS resolver: LEGACY or ASYNC; both use the system resolver (getaddrinfo) off the I/O threads.",
    ),
    PropSpec::new(
        "net.dns.prefer_ipv4",
        PropKind::Bool,
        Some("false"),
        "Try the IPv4 addresses of a host name first.",
    ),
    PropSpec::new(
        "net.dns.prefer_ipv6",
        PropKind::Bool,
        Some("false"),
        "Try the IPv6 addresses of a host name first (prefer_ipv4 wins if both are set).",
    ),
    PropSpec::new(
        "net.keepalive",
        PropKind::Bool,
        Some("true"),
        "Keep connections open and reuse them across flushes; off closes after each flush.",
    ),
    PropSpec::new(
        "net.keepalive_idle_timeout",
        PropKind::Time,
        Some("30s"),
        "Close a kept-alive connection once it has been idle this long.",
    ),
    PropSpec::new(
        "net.keepalive_max_recycle",
        PropKind::Int,
        Some("2000"),
        "Close a connection after it has been reused this many times (0 = no limit).",
    ),
    PropSpec::new(
        "net.max_worker_connections",
        PropKind::Int,
        Some("0"),
        "Most connections the output keeps open at once (0 = no limit).",
    ),
    PropSpec::new(
        "net.tcp_keepalive",
        PropKind::Bool,
        Some("off"),
        "Enable TCP keepalive probes (SO_KEEPALIVE) on connections.",
    ),
    PropSpec::new(
        "net.tcp_keepalive_time",
        PropKind::Int,
        Some("-1"),
        "Seconds idle before the first keepalive probe (TCP_KEEPIDLE); -1 = system default.",
    ),
    PropSpec::new(
        "net.tcp_keepalive_interval",
        PropKind::Int,
        Some("-1"),
        "Seconds between keepalive probes (TCP_KEEPINTVL); -1 = system default.",
    ),
    PropSpec::new(
        "net.tcp_keepalive_probes",
        PropKind::Int,
        Some("-1"),
        "Unanswered probes before the connection is dropped (TCP_KEEPCNT); -1 = system default.",
    ),
    PropSpec::new(
        "net.io_timeout",
        PropKind::Time,
        Some("0s"),
        "Fail a write (and retry the chunk) when it makes no progress for this long; 0 = never.",
    ),
    PropSpec::new(
        "net.connect_timeout",
        PropKind::Time,
        Some("10s"),
        "Time allowed to resolve, connect and complete the TLS handshake.",
    ),
    PropSpec::new(
        "net.connect_timeout_log_error",
        PropKind::Bool,
        Some("true"),
        "Log connect timeouts as errors (else at debug level).",
    ),
    PropSpec::new(
        "net.source_address",
        PropKind::Str,
        None,
        "Local IP address to connect from (bound before connect).",
    ),
    PropSpec::new(
        "net.proxy_env_ignore",
        PropKind::Bool,
        Some("false"),
        "Ignore HTTP_PROXY/NO_PROXY (HTTP outputs); raw TCP is never sent through an HTTP proxy.",
    ),
];

/// Downstream (server input) properties, Fluent Bit's names and defaults.
pub const DOWNSTREAM_NET_PROPS: &[PropSpec] = &[
    PropSpec::new(
        "net.share_port",
        PropKind::Bool,
        Some("false"),
        "Let several listeners share the port (SO_REUSEPORT).",
    ),
    PropSpec::new(
        "net.backlog",
        PropKind::Int,
        Some("128"),
        "Listen backlog (capped by the kernel's somaxconn).",
    ),
    PropSpec::new(
        "net.io_timeout",
        PropKind::Time,
        Some("0s"),
        "Close a client connection idle this long; 0 = never.",
    ),
    PropSpec::new(
        "net.accept_timeout",
        PropKind::Time,
        Some("10s"),
        "Time allowed to accept a connection, TLS handshake included.",
    ),
    PropSpec::new(
        "net.first_frame_timeout",
        PropKind::Time,
        Some("30s"),
        "A client must complete its first frame (forward: the handshake) or record (tcp) this soon after connecting; 0 = no limit. Not in Fluent Bit.",
    ),
    PropSpec::new(
        "net.idle_timeout",
        PropKind::Time,
        Some("300s"),
        "Close a client connection that completed no frame or record for this long (a trickle of bytes does not count); 0 = never. Not in Fluent Bit.",
    ),
    PropSpec::new(
        "net.accept_timeout_log_error",
        PropKind::Bool,
        Some("true"),
        "Log accept timeouts as errors (else at debug level).",
    ),
    PropSpec::new(
        "net.keepalive",
        PropKind::Bool,
        Some("true"),
        "Keep client connections open between messages.",
    ),
];

/// Which address family to try first when a name resolves to both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefer {
    /// The resolver's order.
    None,
    V4,
    V6,
}

/// TCP keepalive probes (`net.tcp_keepalive*`); `None` fields keep the system default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpKeepalive {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

/// Every upstream `net.*` setting, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct NetSetup {
    pub keepalive: bool,
    pub keepalive_idle_timeout: Duration,
    /// Reuses allowed after the first use; `None` = no limit.
    pub keepalive_max_recycle: Option<u32>,
    /// `None` = no limit.
    pub max_connections: Option<usize>,
    /// `None` = SO_KEEPALIVE off.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `None` = writes may wait forever (Fluent Bit's `0`).
    pub io_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub connect_timeout_log_error: bool,
    pub source_address: Option<IpAddr>,
    pub prefer: Prefer,
    /// `net.proxy_env_ignore`: HTTP clients ignore HTTP_PROXY/NO_PROXY.
    pub proxy_env_ignore: bool,
}

fn non_negative(props: &Props, name: &str) -> Result<Option<i64>, ConfigError> {
    match props.int(name) {
        Some(n) if n < -1 => Err(props.error(name, "a number >= 0, or -1 for the system default")),
        Some(-1) | None => Ok(None),
        Some(n) => Ok(Some(n)),
    }
}

impl NetSetup {
    /// Reads and checks the upstream `net.*` properties of one output section.
    pub fn from_props(props: &Props) -> Result<NetSetup, ConfigError> {
        // Fluent Bit: the first letter decides, T = TCP, anything else = UDP.
        if let Some(mode) = props.str("net.dns.mode") {
            if mode.starts_with(['T', 't']) {
                return Err(props.error(
                    "net.dns.mode",
                    "UDP: agent resolves names with the system resolver (getaddrinfo), which \
                     cannot be switched to TCP per connection; for DNS over TCP set \
                     'options use-vc' in /etc/resolv.conf and leave net.dns.mode unset",
                ));
            }
        }
        if let Some(resolver) = props.str("net.dns.resolver") {
            if !["legacy", "async"].contains(&resolver.to_ascii_lowercase().as_str()) {
                return Err(props.error("net.dns.resolver", "LEGACY or ASYNC"));
            }
        }
        let prefer = if props.bool("net.dns.prefer_ipv4") == Some(true) {
            Prefer::V4
        } else if props.bool("net.dns.prefer_ipv6") == Some(true) {
            Prefer::V6
        } else {
            Prefer::None
        };
        let max_recycle = match props.int("net.keepalive_max_recycle") {
            Some(n) if n < 0 => {
                return Err(props.error("net.keepalive_max_recycle", "a number >= 0 (0 = no limit)"))
            }
            Some(0) | None => None,
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let max_connections = match props.int("net.max_worker_connections") {
            Some(n) if n < 0 => {
                return Err(
                    props.error("net.max_worker_connections", "a number >= 0 (0 = no limit)")
                )
            }
            Some(0) | None => None,
            Some(n) => Some(n as usize),
        };
        let secs = |n: i64| Duration::from_secs(n as u64);
        let tcp_keepalive = if props.bool("net.tcp_keepalive") == Some(true) {
            Some(TcpKeepalive {
                time: non_negative(props, "net.tcp_keepalive_time")?.map(secs),
                interval: non_negative(props, "net.tcp_keepalive_interval")?.map(secs),
                probes: non_negative(props, "net.tcp_keepalive_probes")?
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            })
        } else {
            None
        };
        let connect_timeout = props.time("net.connect_timeout").unwrap_or_default();
        if connect_timeout.is_zero() {
            return Err(props.error("net.connect_timeout", "a duration > 0 such as 10 or 500ms"));
        }
        let source_address = match props.str("net.source_address") {
            None => None,
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                props.error(
                    "net.source_address",
                    "an IP address of this host, such as 10.0.0.5",
                )
            })?),
        };
        let io_timeout = props.time("net.io_timeout").filter(|d| !d.is_zero());
        Ok(NetSetup {
            keepalive: props.bool("net.keepalive").unwrap_or(true),
            keepalive_idle_timeout: props.time("net.keepalive_idle_timeout").unwrap_or_default(),
            keepalive_max_recycle: max_recycle,
            max_connections,
            tcp_keepalive,
            io_timeout,
            connect_timeout,
            connect_timeout_log_error: props.bool("net.connect_timeout_log_error").unwrap_or(true),
            source_address,
            prefer,
            proxy_env_ignore: props.bool("net.proxy_env_ignore") == Some(true),
        })
    }

    /// For outputs that speak raw TCP (`tcp`, `forward`): says once, at start, that
    /// `HTTP_PROXY` is not used for them. HTTP outputs use it (see `crate::http_client`).
    pub fn warn_proxy_env_unused(&self, props: &Props) {
        if self.proxy_env_ignore {
            return;
        }
        let proxied = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if proxied {
            crate::warn!(
                "{}: [config] {}: HTTP_PROXY is set, but agent does not tunnel raw TCP through HTTP proxies: connecting directly (set net.proxy_env_ignore on to silence this)",
                props.span(),
                props.plugin()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Entry, PluginKind, Span};

    fn props(entries: &[(&str, &str)]) -> Result<Props, ConfigError> {
        Props::new(
            PluginKind::Output,
            "tcp",
            Span::new("t.conf", 1),
            &[],
            &[NET_PROPS],
            entries
                .iter()
                .enumerate()
                .map(|(i, (k, v))| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                    span: Span::new("t.conf", i as u32 + 2),
                })
                .collect(),
        )
    }

    fn setup(entries: &[(&str, &str)]) -> Result<NetSetup, ConfigError> {
        NetSetup::from_props(&props(entries)?)
    }

    #[test]
    fn fluent_bit_defaults() {
        let s = setup(&[]).unwrap();
        assert_eq!(
            s,
            NetSetup {
                keepalive: true,
                keepalive_idle_timeout: Duration::from_secs(30),
                keepalive_max_recycle: Some(2000),
                max_connections: None,
                tcp_keepalive: None,
                io_timeout: None,
                connect_timeout: Duration::from_secs(10),
                connect_timeout_log_error: true,
                source_address: None,
                prefer: Prefer::None,
                proxy_env_ignore: false,
            }
        );
    }

    #[test]
    fn every_upstream_property_is_read() {
        let s = setup(&[
            ("net.keepalive", "off"),
            ("net.keepalive_idle_timeout", "2"),
            ("net.keepalive_max_recycle", "0"),
            ("net.max_worker_connections", "3"),
            ("net.tcp_keepalive", "on"),
            ("net.tcp_keepalive_time", "30"),
            ("net.tcp_keepalive_interval", "-1"),
            ("net.tcp_keepalive_probes", "4"),
            ("net.io_timeout", "500ms"),
            ("net.connect_timeout", "5"),
            ("net.connect_timeout_log_error", "off"),
            ("net.source_address", "127.0.0.2"),
            ("net.dns.prefer_ipv6", "on"),
            ("net.dns.mode", "UDP"),
            ("net.dns.resolver", "legacy"),
            ("net.proxy_env_ignore", "on"),
        ])
        .unwrap();
        assert!(!s.keepalive);
        assert_eq!(s.keepalive_idle_timeout, Duration::from_secs(2));
        assert_eq!(s.keepalive_max_recycle, None);
        assert_eq!(s.max_connections, Some(3));
        assert_eq!(
            s.tcp_keepalive,
            Some(TcpKeepalive {
                time: Some(Duration::from_secs(30)),
                interval: None,
                probes: Some(4)
            })
        );
        assert_eq!(s.io_timeout, Some(Duration::from_millis(500)));
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert!(!s.connect_timeout_log_error);
        assert_eq!(s.source_address, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(s.prefer, Prefer::V6);
    }

    #[test]
    fn prefer_ipv4_wins_over_ipv6() {
        let s = setup(&[("net.dns.prefer_ipv4", "on"), ("net.dns.prefer_ipv6", "on")]).unwrap();
        assert_eq!(s.prefer, Prefer::V4);
    }

    #[test]
    fn what_cannot_be_honoured_is_a_located_error() {
        let cases = [
            ("net.dns.mode", "TCP", "t.conf:2: [config] tcp: invalid value 'TCP' for property 'net.dns.mode': expected UDP"),
            ("net.dns.resolver", "bind", "t.conf:2: [config] tcp: invalid value 'bind' for property 'net.dns.resolver': expected LEGACY or ASYNC"),
            ("net.source_address", "eth0", "t.conf:2: [config] tcp: invalid value 'eth0' for property 'net.source_address': expected an IP address"),
            ("net.connect_timeout", "0", "t.conf:2: [config] tcp: invalid value '0' for property 'net.connect_timeout': expected a duration > 0"),
            ("net.keepalive_max_recycle", "-2", "t.conf:2: [config] tcp: invalid value '-2' for property 'net.keepalive_max_recycle'"),
            ("net.max_worker_connections", "-1", "t.conf:2: [config] tcp: invalid value '-1' for property 'net.max_worker_connections'"),
        ];
        for (key, value, want) in cases {
            let e = setup(&[(key, value)]).unwrap_err().to_string();
            assert!(e.starts_with(want), "{key}={value}: {e}");
        }
        let e = setup(&[
            ("net.tcp_keepalive", "on"),
            ("net.tcp_keepalive_probes", "-5"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("t.conf:3: [config] tcp: invalid value '-5' for property 'net.tcp_keepalive_probes'"), "{e}");
    }

    #[test]
    fn downstream_table_has_fluent_bit_defaults() {
        let d = |n: &str| {
            DOWNSTREAM_NET_PROPS
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .default
        };
        assert_eq!(d("net.backlog"), Some("128"));
        assert_eq!(d("net.accept_timeout"), Some("10s"));
        assert_eq!(d("net.io_timeout"), Some("0s"));
        assert_eq!(d("net.keepalive"), Some("true"));
        assert_eq!(d("net.share_port"), Some("false"));
        assert_eq!(d("net.accept_timeout_log_error"), Some("true"));
        // agent's own bounds on idle and trickling clients (issue 21 item 2).
        assert_eq!(d("net.first_frame_timeout"), Some("30s"));
        assert_eq!(d("net.idle_timeout"), Some("300s"));
        for spec in DOWNSTREAM_NET_PROPS.iter().chain(NET_PROPS) {
            if let Some(def) = spec.default {
                assert!(spec.kind.check(def), "{} default '{def}'", spec.name);
            }
        }
    }
}
