//! What the `kafka` output and input share: the librdkafka client configuration built
//! from a section's properties (Fluent Bit's `flb_kafka_conf_create`), checked without
//! connecting, and the client context that turns librdkafka's logs and errors into the
//! agent's log lines — each problem said once, with what to change, until it clears.
//! Knows no plugin and no pipeline.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

/// How a client is set up: Fluent Bit's order (`client.id`, `group.id`,
/// `bootstrap.servers`, then every `rdkafka.*` key as written).
pub struct Settings<'a> {
    pub client_id: &'a str,
    /// Consumers only.
    pub group_id: Option<&'a str>,
    pub brokers: &'a str,
    /// `(key without "rdkafka.", value)`, in order.
    pub extra: Vec<(&'a str, &'a str)>,
}

/// A librdkafka setting refused: which key (without `rdkafka.`) and librdkafka's reason.
#[derive(Debug)]
pub struct BadSetting {
    pub key: String,
    pub reason: String,
}

impl Settings<'_> {
    /// The client configuration, with every value already checked by librdkafka itself
    /// (unknown keys and bad values are refused here, before anything connects).
    pub fn client_config(&self, forced: &[(&str, &str)]) -> Result<ClientConfig, BadSetting> {
        let mut cfg = ClientConfig::new();
        cfg.set("client.id", self.client_id);
        if let Some(g) = self.group_id {
            cfg.set("group.id", g);
        }
        cfg.set("bootstrap.servers", self.brokers);
        for (k, v) in &self.extra {
            // One key at a time, so that a refusal names the key that caused it.
            let mut one = ClientConfig::new();
            one.set(*k, *v);
            if let Err(e) = one.create_native_config() {
                return Err(BadSetting {
                    key: k.to_string(),
                    reason: reason_of(&e),
                });
            }
            cfg.set(*k, *v);
        }
        for (k, v) in forced {
            cfg.set(*k, *v);
        }
        cfg.set_log_level(RDKafkaLogLevel::Info);
        // The whole set once more: combinations librdkafka checks only together.
        cfg.create_native_config().map_err(|e| BadSetting {
            key: String::new(),
            reason: reason_of(&e),
        })?;
        Ok(cfg)
    }
}

fn reason_of(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
        other => other.to_string(),
    }
}

/// The agent's librdkafka context: log lines as the agent's (Fluent Bit's level mapping),
/// and client-wide errors said once per change, with the fix. Clones share their state:
/// the plugin keeps one to report delivery errors through the same "once per change".
#[derive(Clone)]
pub struct Context(std::sync::Arc<Inner>);

pub struct Inner {
    /// `[output:kafka:kafka.0]` — the prefix of every line.
    prefix: String,
    brokers: String,
    state: Mutex<State>,
}

impl std::ops::Deref for Context {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(Default)]
struct State {
    /// The problem last reported (its class and line), so that repeats stay quiet.
    problem: Option<(String, String)>,
    /// The last librdkafka log line and when, so a line repeated in a loop is said once
    /// a minute.
    last_log: Option<(String, Instant)>,
    /// "Cannot reach the brokers", waiting [`UNREACHABLE_GRACE`] to be said.
    unreachable: Option<String>,
    /// Counts recoveries: a wait that saw one says nothing.
    recoveries: u64,
}

const REPEAT_LOG_AFTER: Duration = Duration::from_secs(60);

/// How long the client's "all brokers down" waits before it is said. Its first one
/// often comes within milliseconds of the first connection (`localhost` tried on ::1,
/// refused, while the broker listens on 127.0.0.1), before the real cause (a TLS or
/// login failure on the next address) is known; a cause said in the meantime is said
/// instead, and brokers reached in the meantime make it nothing.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(1);

impl Context {
    pub fn new(prefix: String, brokers: &str) -> Context {
        Context(std::sync::Arc::new(Inner {
            prefix,
            brokers: brokers.to_string(),
            state: Mutex::new(State::default()),
        }))
    }

    /// `[output:kafka:kafka.0]`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports a problem unless it is the one reported last. `class` groups messages
    /// that differ only in details (a broker address, a count). Returns the line of the
    /// problem in force: a failed delivery's reason names the cause, not its symptom.
    pub fn problem(&self, class: &str, line: impl FnOnce() -> String) -> String {
        let mut st = self.state();
        match &st.problem {
            // A refused login or handshake also makes the brokers "down" (deliveries
            // time out): the cause stays the problem reported until things work again.
            Some((cause, said))
                if class == "unreachable" && matches!(cause.as_str(), "auth" | "tls" | "acl") =>
            {
                said.clone()
            }
            Some((same, said)) if same == class => said.clone(),
            _ => {
                let line = line();
                st.problem = Some((class.to_string(), line.clone()));
                drop(st);
                crate::error!("{} {line}", self.prefix);
                line
            }
        }
    }

    /// A topic the brokers do not have (checked when a producer starts): said once,
    /// with the fix, as its deliveries wait for it.
    pub fn missing_topic(&self, topic: &str) {
        self.problem("topic", || {
            format!(
                "topic '{topic}' does not exist on the brokers '{}' and they do not create it on \
                 use: create it (or enable the brokers' auto.create.topics.enable), or fix \
                 'topics'; its records are kept and retried",
                self.brokers
            )
        });
    }

    /// Things work again (a delivery acknowledged, a fetch answered): says so once if a
    /// problem was reported.
    pub fn recovered(&self, what: &str) {
        let mut st = self.state();
        st.unreachable = None;
        st.recoveries += 1;
        if st.problem.take().is_some() {
            drop(st);
            crate::info!("{} {what}", self.prefix);
        }
    }

    /// The fix for an error of a message or of the client, by its code.
    pub fn describe(&self, e: &KafkaError) -> (&'static str, String) {
        self.describe_because(e, &e.to_string())
    }

    /// The same, saying what went wrong with `because` (librdkafka's reason for a
    /// client error names the broker and the OpenSSL or SASL cause).
    fn describe_because(&self, e: &KafkaError, because: &str) -> (&'static str, String) {
        let code = e.rdkafka_error_code();
        let brokers = &self.brokers;
        match code {
            Some(
                RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut,
            ) => (
                "unreachable",
                format!(
                    "cannot reach the brokers '{brokers}' ({e}): check 'brokers' (host:port, \
                     comma-separated) and that the brokers are up; records are kept and retried"
                ),
            ),
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::UnsupportedSASLMechanism
                | RDKafkaErrorCode::IllegalSASLState,
            ) => (
                "auth",
                format!(
                    "authentication with '{brokers}' failed ({because}): check \
                     rdkafka.security.protocol, \
                     rdkafka.sasl.mechanism, rdkafka.sasl.username and rdkafka.sasl.password; \
                     records are kept and retried"
                ),
            ),
            Some(RDKafkaErrorCode::SSL) => (
                "tls",
                format!(
                    "TLS with '{brokers}' failed ({because}): check rdkafka.ssl.ca.location and the \
                     brokers' certificates; records are kept and retried"
                ),
            ),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition,
            ) => (
                "topic",
                format!(
                    "{e}: the topic does not exist and the broker does not create it: create it \
                     (or enable the broker's auto.create.topics.enable), or fix 'topics'; \
                     records are kept and retried"
                ),
            ),
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => (
                "acl",
                format!(
                    "{e}: the broker's ACLs refuse this client: grant it access to the topic \
                     (and group); records are kept and retried"
                ),
            ),
            _ => ("other", format!("{e}")),
        }
    }

    fn log_line(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        {
            let mut st = self.state();
            let now = Instant::now();
            if let Some((last, at)) = &st.last_log {
                if last == msg && now.duration_since(*at) < REPEAT_LOG_AFTER {
                    return;
                }
            }
            st.last_log = Some((msg.to_string(), now));
        }
        // Fluent Bit's cb_kafka_logger mapping.
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => crate::error!("{} {fac}: {msg}", self.prefix),
            RDKafkaLogLevel::Warning => crate::warn!("{} {fac}: {msg}", self.prefix),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                crate::info!("{} {fac}: {msg}", self.prefix)
            }
            RDKafkaLogLevel::Debug => crate::debug!("{} {fac}: {msg}", self.prefix),
        }
    }
}

impl Context {
    /// Says "cannot reach the brokers" after [`UNREACHABLE_GRACE`], unless the brokers
    /// were reached meanwhile; a cause said meanwhile (TLS, login) stays the problem
    /// reported ([`Inner::problem`]).
    fn unreachable_after_grace(&self, line: String) {
        let mut st = self.state();
        let said = st.problem.as_ref().is_some_and(|(c, _)| c == "unreachable");
        if said || st.unreachable.is_some() {
            return;
        }
        st.unreachable = Some(line);
        let recoveries = st.recoveries;
        drop(st);
        let ctx = self.clone();
        let wait = move || {
            std::thread::sleep(UNREACHABLE_GRACE);
            let line = {
                let mut st = ctx.state();
                match st.unreachable.take() {
                    Some(line) if st.recoveries == recoveries => line,
                    _ => return,
                }
            };
            ctx.problem("unreachable", || line);
        };
        if let Err(e) = std::thread::Builder::new()
            .name("kafka-grace".into())
            .spawn(wait)
        {
            crate::debug!("{} no thread to wait for the brokers: {e}", self.prefix);
            let line = self.state().unreachable.take();
            if let Some(line) = line {
                self.problem("unreachable", || line);
            }
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        // Connection, TLS and login failures come again as `error` below, with the
        // fix and the same cause: said there.
        if matches!(fac, "FAIL" | "ERROR" | "SSL") {
            crate::debug!("{} {fac}: {msg}", self.prefix);
            return;
        }
        self.log_line(level, fac, msg);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // One connection failing is not the brokers being unreachable: `localhost`
        // tried on ::1 first is refused when the broker listens on 127.0.0.1 only,
        // and the real cause (a TLS or login failure on the next address) follows.
        // librdkafka says ALL_BROKERS_DOWN when none can be reached: said then.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::BrokerTransportFailure) {
            crate::debug!("{} {error}: {reason}", self.prefix);
            return;
        }
        let because = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        let (class, line) = self.describe_because(&error, &because);
        if class == "unreachable" {
            self.unreachable_after_grace(line);
            return;
        }
        self.problem(class, || {
            if class == "other" {
                format!("{line}: {reason}")
            } else {
                line
            }
        });
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                crate::info!("{} partitions assigned: {}", self.prefix, partitions(tpl))
            }
            Rebalance::Revoke(tpl) => {
                crate::info!("{} partitions revoked: {}", self.prefix, partitions(tpl))
            }
            Rebalance::Error(e) => crate::warn!("{} rebalance failed: {e}", self.prefix),
        }
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> String {
    let all: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect();
    if all.is_empty() {
        "none".to_string()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(ctx: &Context) -> Option<String> {
        ctx.state().problem.as_ref().map(|(class, _)| class.clone())
    }

    #[test]
    fn all_brokers_down_waits_for_its_cause_and_for_recovery() {
        let down = || KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        let after_grace = || std::thread::sleep(UNREACHABLE_GRACE + Duration::from_millis(300));
        // Alone: said once the grace is over.
        let ctx = Context::new("[output:kafka:kafka.0]".into(), "localhost:9092");
        ctx.error(down(), "1/1 brokers are down");
        assert_eq!(said(&ctx), None);
        after_grace();
        assert_eq!(said(&ctx).as_deref(), Some("unreachable"));
        // The TLS failure that follows it within the grace is what is said.
        let ctx = Context::new("[output:kafka:kafka.0]".into(), "localhost:9092");
        ctx.error(down(), "1/1 brokers are down");
        ctx.error(
            KafkaError::Global(RDKafkaErrorCode::SSL),
            "certificate verify failed",
        );
        assert_eq!(said(&ctx).as_deref(), Some("tls"));
        after_grace();
        assert_eq!(said(&ctx).as_deref(), Some("tls"));
        // Brokers reached within the grace: nothing.
        let ctx = Context::new("[output:kafka:kafka.0]".into(), "localhost:9092");
        ctx.error(down(), "1/1 brokers are down");
        ctx.recovered("delivering again");
        after_grace();
        assert_eq!(said(&ctx), None);
    }

    fn settings<'a>(extra: Vec<(&'a str, &'a str)>) -> Settings<'a> {
        Settings {
            client_id: "fluent-bit",
            group_id: None,
            brokers: "127.0.0.1:9092",
            extra,
        }
    }

    #[test]
    fn librdkafka_checks_every_key_without_connecting() {
        let ok = settings(vec![
            ("log.connection.close", "false"),
            ("queue.buffering.max.kbytes", "10240"),
            ("request.required.acks", "1"),
            ("compression.codec", "zstd"),
        ]);
        let cfg = ok.client_config(&[]).unwrap();
        assert_eq!(cfg.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(cfg.get("request.required.acks"), Some("1"));

        let bad = settings(vec![("acks", "1"), ("no.such.key", "1")]);
        let e = bad.client_config(&[]).unwrap_err();
        assert_eq!(e.key, "no.such.key");
        assert!(
            e.reason.contains("No such configuration property"),
            "{}",
            e.reason
        );

        let bad = settings(vec![("request.required.acks", "lots")]);
        let e = bad.client_config(&[]).unwrap_err();
        assert_eq!(e.key, "request.required.acks");
        assert!(e.reason.contains("Invalid value"), "{}", e.reason);
    }

    #[test]
    fn a_problem_is_said_once_until_it_clears() {
        let c = Context::new("[output:kafka:kafka.0]".into(), "b:1");
        let mut said = 0;
        c.problem("unreachable", || {
            said += 1;
            String::new()
        });
        c.problem("unreachable", || {
            said += 1;
            String::new()
        });
        assert_eq!(said, 1);
        c.recovered("delivering again");
        c.problem("unreachable", || {
            said += 1;
            String::new()
        });
        assert_eq!(said, 2);
        // A refused login makes deliveries time out: their reason is the login's line.
        c.recovered("delivering again");
        assert_eq!(
            c.problem("auth", || "check the password".into()),
            "check the password"
        );
        assert_eq!(
            c.problem("unreachable", || "cannot reach".into()),
            "check the password"
        );
        let (class, line) = c.describe(&KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
        assert_eq!(class, "topic");
        assert!(line.contains("create it"), "{line}");
    }
}
