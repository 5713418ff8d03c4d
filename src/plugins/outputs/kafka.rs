//! `kafka` output: each record a message to a Kafka topic, through librdkafka.
//! Fluent Bit: plugins/out_kafka/kafka.c, kafka_config.c, kafka_topic.c
//!
//! Messages as Fluent Bit writes them: `format json` (the default) is the record with
//! `timestamp_key` (`@timestamp`) first, as a double, `iso8601` (microseconds) or
//! `iso8601_ns` string; `msgpack` is the same map in msgpack; `gelf` is GELF 1.1 as
//! Fluent Bit writes it (`gelf_*_key`); `raw` is the string value of `raw_log_key`
//! alone. The message key is the first string value of
//! `message_key_field`, else `message_key`; the topic is the first of `topics`
//! (`fluent-bit` when unset), or the record's `topic_key` string when it names one of
//! `topics` (any name with `dynamic_topic on`). Every `rdkafka.*` property goes to
//! librdkafka as written, checked by librdkafka when the config is loaded.
//!
//! Where agent differs on purpose: Fluent Bit reports a chunk delivered once its
//! messages are queued in librdkafka, so a broker that never acknowledges them loses
//! them. Here a chunk is delivered only when the broker acknowledged every message
//! (librdkafka's delivery reports); messages not acknowledged are sent again on the
//! engine's retry — only those, and counted in `agent_output_kafka_resent_records_total`
//! (each may reach the topic twice). A record that cannot become a message (no
//! `raw_log_key` string, no GELF short message, too large for the broker) is dropped and
//! counted, not the chunk.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::{
    gelf_fields, GELF_FULL_MESSAGE_KEY, GELF_HOST_KEY, GELF_LEVEL_KEY, GELF_SHORT_MESSAGE_KEY,
    GELF_TIMESTAMP_KEY,
};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::{self, DateFormat, JsonOptions};
use crate::event::{Chunk, Map, Record, Str, Value};
use crate::kafka::{Context, Settings};
use crate::pipeline::metrics;
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin, Partial};

/// The properties both Kafka plugins have (Fluent Bit's `flb_kafka_conf_create`).
pub const BROKERS: PropSpec = PropSpec::new(
    "brokers",
    PropKind::Str,
    None,
    "The Kafka brokers, comma-separated host:port (required).",
);
pub const CLIENT_ID: PropSpec = PropSpec::new(
    "client_id",
    PropKind::Str,
    Some("fluent-bit"),
    "The Kafka client.id.",
);
pub const AWS_MSK_IAM: PropSpec = PropSpec::new(
    "aws_msk_iam",
    PropKind::Bool,
    Some("false"),
    "AWS MSK IAM authentication (not available in agent: 'on' is a config error).",
);
pub const AWS_MSK_IAM_CLUSTER_ARN: PropSpec = PropSpec::new(
    "aws_msk_iam_cluster_arn",
    PropKind::Str,
    None,
    "The MSK cluster's ARN (with aws_msk_iam).",
);
pub const RDKAFKA: PropSpec = PropSpec::new(
    "rdkafka.",
    PropKind::Prefix,
    None,
    "Any librdkafka setting, e.g. rdkafka.compression.codec zstd, rdkafka.security.protocol sasl_plaintext.",
);

const PROPS: &[PropSpec] = &[
    BROKERS,
    PropSpec::new(
        "topics",
        PropKind::Str,
        Some("fluent-bit"),
        "Topics, comma-separated; the first is the default.",
    ),
    PropSpec::new(
        "topic_key",
        PropKind::Str,
        None,
        "A record key whose string value names the topic (one of 'topics', or any with dynamic_topic).",
    ),
    PropSpec::new(
        "dynamic_topic",
        PropKind::Bool,
        Some("false"),
        "Send to the topic named by topic_key even when it is not in 'topics'.",
    ),
    PropSpec::new(
        "format",
        PropKind::Str,
        Some("json"),
        "Message format: json, msgpack, gelf or raw.",
    ),
    PropSpec::new(
        "message_key",
        PropKind::Str,
        None,
        "A fixed message key.",
    ),
    PropSpec::new(
        "message_key_field",
        PropKind::Str,
        None,
        "A record key whose string value is the message key (else message_key).",
    ),
    PropSpec::new(
        "timestamp_key",
        PropKind::Str,
        Some("@timestamp"),
        "The key of the record's time in json and msgpack messages.",
    ),
    PropSpec::new(
        "timestamp_format",
        PropKind::Str,
        Some("double"),
        "The record's time as double, iso8601 (microseconds) or iso8601_ns.",
    ),
    PropSpec::new(
        "raw_log_key",
        PropKind::Str,
        None,
        "format raw: the key whose string value is the whole message.",
    ),
    PropSpec::new(
        "queue_full_retries",
        PropKind::Int,
        Some("10"),
        "Times to wait for room when librdkafka's queue is full before the engine retries \
         the rest of the chunk; 0: no limit.",
    )
    .range(0, 1_000_000),
    CLIENT_ID,
    PropSpec::new("group_id", PropKind::Str, None, "Unused by the output (Fluent Bit accepts it)."),
    RDKAFKA,
    PropSpec::new(
        "otlp_logs_partition_by_resource",
        PropKind::Bool,
        Some("false"),
        "Only with the OTLP formats, which agent does not offer.",
    ),
    GELF_TIMESTAMP_KEY,
    GELF_HOST_KEY,
    GELF_SHORT_MESSAGE_KEY,
    GELF_FULL_MESSAGE_KEY,
    GELF_LEVEL_KEY,
    AWS_MSK_IAM,
    AWS_MSK_IAM_CLUSTER_ARN,
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "kafka",
    description: "Kafka",
    props: PROPS,
    // One worker keeps the chunks of a tag in order on each partition, as Fluent Bit's
    // single flush thread does; `workers N` overlaps N chunks' acknowledgements.
    workers: 1,
    net: false,
    build,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Msgpack,
    Gelf,
    Raw,
}

/// What every worker shares: the settings and the one producer (created at the first
/// flush, so that `--dry-run` connects to nothing).
struct Shared {
    config: rdkafka::ClientConfig,
    brokers: String,
    prefix: String,
    context: Context,
    producer: OnceLock<Result<FutureProducer<Context>, String>>,
    format: Format,
    topics: Vec<Str>,
    topic_key: Option<Str>,
    dynamic_topic: bool,
    message_key: Option<Str>,
    message_key_field: Option<Str>,
    raw_log_key: Option<Str>,
    json: JsonOptions,
    gelf: format::GelfFields,
    queue_full_retries: u32,
    /// Records not acknowledged by the broker and sent again.
    resent: Arc<AtomicU64>,
}

struct KafkaOutput {
    shared: Arc<Shared>,
    buf: Vec<u8>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let config = client_config(props, None, &[])?;
    let brokers = props.str("brokers").unwrap_or_default().to_string();
    let format = match props
        .str("format")
        .unwrap_or("json")
        .to_ascii_lowercase()
        .as_str()
    {
        "json" => Format::Json,
        "msgpack" => Format::Msgpack,
        "raw" => Format::Raw,
        "gelf" => Format::Gelf,
        f @ ("avro" | "otlp_json" | "otlp_proto") => {
            return Err(props.error(
                "format",
                format!(
                "json, msgpack, gelf or raw (format {f} is not available in agent's kafka output)"
            ),
            ))
        }
        other => {
            // Fluent Bit reads any other word as json.
            crate::warn!(
                "{}: [config] kafka: format '{other}' is not a format, messages are json (as Fluent Bit does)",
                props.span_of("format")
            );
            Format::Json
        }
    };
    let raw_log_key = props.str("raw_log_key").map(Str::from);
    if format == Format::Raw && raw_log_key.is_none() {
        return Err(ConfigError::invalid(
            props.span_of("format"),
            "[config] kafka: format raw sends one key's value: 'raw_log_key' is not set",
            Some("add 'raw_log_key log' (the key whose string is the message)".into()),
        ));
    }
    let date_format = match props.str("timestamp_format").unwrap_or("double") {
        f if f.eq_ignore_ascii_case("iso8601") => DateFormat::Iso8601,
        f if f.eq_ignore_ascii_case("iso8601_ns") => DateFormat::Iso8601Ns,
        f if f.eq_ignore_ascii_case("double") => DateFormat::Double,
        other => {
            crate::warn!(
                "{}: [config] kafka: timestamp_format '{other}' is not double, iso8601 or iso8601_ns: \
                 double is used (as Fluent Bit does)",
                props.span_of("timestamp_format")
            );
            DateFormat::Double
        }
    };
    let topics: Vec<Str> = props
        .str("topics")
        .unwrap_or("fluent-bit")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Str::from)
        .collect();
    if topics.is_empty() {
        return Err(props.error("topics", "one or more topic names, comma-separated"));
    }
    let prefix = format!("[output:kafka:{}]", ctx.instance);
    Ok(Box::new(KafkaOutput {
        shared: Arc::new(Shared {
            config,
            context: Context::new(prefix.clone(), &brokers),
            brokers,
            prefix,
            producer: OnceLock::new(),
            format,
            topics,
            topic_key: props.str("topic_key").map(Str::from),
            dynamic_topic: props.bool("dynamic_topic") == Some(true),
            message_key: props.str("message_key").map(Str::from),
            message_key_field: props.str("message_key_field").map(Str::from),
            raw_log_key,
            gelf: gelf_fields(props),
            json: JsonOptions {
                date_key: Some(Str::from(
                    props.str("timestamp_key").unwrap_or("@timestamp"),
                )),
                date_format,
                escape_unicode: ctx.service.escape_unicode,
            },
            queue_full_retries: props.int("queue_full_retries").unwrap_or(10) as u32,
            resent: ctx.metrics.counter(
                "agent_output_kafka_resent_records_total",
                "Records the broker did not acknowledge, sent again (each may arrive twice).",
                ctx.instance,
            ),
        }),
        buf: Vec::with_capacity(4096),
    }))
}

/// The librdkafka configuration of a `kafka` section, every `rdkafka.*` value checked
/// by librdkafka at its line. `forced` settings go last (the input's offset handling).
pub fn client_config(
    props: &Props,
    group_id: Option<&str>,
    forced: &[(&str, &str)],
) -> Result<rdkafka::ClientConfig, ConfigError> {
    if props.bool("aws_msk_iam") == Some(true) {
        return Err(ConfigError::invalid(
            props.span_of("aws_msk_iam"),
            "[config] kafka: aws_msk_iam: AWS MSK IAM authentication is not available in agent",
            Some(
                "use SASL/SCRAM (rdkafka.sasl.mechanism SCRAM-SHA-512) or mTLS on the cluster"
                    .into(),
            ),
        ));
    }
    let Some(brokers) = props.str("brokers") else {
        return Err(ConfigError::invalid(
            props.span(),
            format!("[config] {}: no brokers defined", props.plugin()),
            Some("add 'brokers host:9092' (comma-separated for several)".into()),
        ));
    };
    let extra: Vec<(&str, &str)> = props
        .prefixed("rdkafka.")
        .into_iter()
        .map(|(k, v)| (&k["rdkafka.".len()..], v))
        .collect();
    let settings = Settings {
        client_id: props.str("client_id").unwrap_or("fluent-bit"),
        group_id,
        brokers,
        extra,
    };
    settings.client_config(forced).map_err(|bad| {
        let key = format!("rdkafka.{}", bad.key);
        let hint = if bad.reason.contains("OpenSSL not available") {
            "this agent was built without OpenSSL (--no-default-features): build it with the \
             default features, or `--features kafka-ssl` (libssl-dev and pkg-config)"
                .to_string()
        } else if bad.reason.contains("No such configuration property") {
            "see librdkafka's CONFIGURATION.md for the names it knows".to_string()
        } else {
            format!("librdkafka says: {}", bad.reason)
        };
        if bad.key.is_empty() {
            ConfigError::invalid(
                props.span(),
                format!(
                    "[config] {}: librdkafka refuses these settings: {}",
                    props.plugin(),
                    bad.reason
                ),
                Some(hint),
            )
        } else {
            ConfigError::invalid(
                props.span_of(&key),
                format!("[config] {}: {key}: {}", props.plugin(), bad.reason),
                Some(hint),
            )
        }
    })
}

/// How one record's delivery ended.
enum Outcome {
    Delivered,
    /// Not acknowledged: send it again (the broker may or may not have it).
    Resend(KafkaError),
    /// Refused for good (too large, invalid): dropped and counted.
    Refused(KafkaError),
}

/// A delivery report (`Err(_)`: the producer went away before reporting).
fn outcome<E>(
    result: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, E>,
) -> Outcome {
    match result {
        Ok(Ok(_)) => Outcome::Delivered,
        Ok(Err((e, _))) if is_permanent(&e) => Outcome::Refused(e),
        Ok(Err((e, _))) => Outcome::Resend(e),
        Err(_) => Outcome::Resend(KafkaError::Canceled),
    }
}

/// Errors a resend cannot cure.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTopic
        )
    )
}

impl Shared {
    fn producer(&self) -> Result<&FutureProducer<Context>, String> {
        self.producer
            .get_or_init(|| {
                let topics: Vec<&str> = self.topics.iter().map(|t| &**t).collect();
                crate::info!(
                    "{} brokers='{}' topics='{}'",
                    self.prefix,
                    self.brokers,
                    topics.join(",")
                );
                let producer: FutureProducer<Context> = self
                    .config
                    .create_with_context(self.context.clone())
                    .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
                self.check_topics(&producer);
                Ok(producer)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Asks the brokers, off the flush path, whether the configured topics exist: a
    /// missing one is said at once (its messages would otherwise wait silently for
    /// `message.timeout.ms`).
    fn check_topics(&self, producer: &FutureProducer<Context>) {
        let producer = producer.clone();
        let topics: Vec<Str> = self.topics.clone();
        let context = self.context.clone();
        let spawned = std::thread::Builder::new()
            .name("kafka-topics".into())
            .spawn(move || {
                use rdkafka::producer::Producer;
                for topic in topics {
                    let md = producer
                        .client()
                        .fetch_metadata(Some(&topic), Duration::from_secs(30));
                    let Ok(md) = md else { return };
                    let missing = md.topics().iter().any(|t| {
                        t.name() == &*topic
                            && matches!(
                                t.error().map(RDKafkaErrorCode::from),
                                Some(
                                    RDKafkaErrorCode::UnknownTopicOrPartition
                                        | RDKafkaErrorCode::UnknownTopic
                                )
                            )
                    });
                    if missing {
                        context.missing_topic(&topic);
                    }
                }
            });
        if let Err(e) = spawned {
            crate::debug!("{} topic check not started: {e}", self.prefix);
        }
    }

    /// The first string value of `key` in the body.
    fn string_of<'r>(body: &'r Map, key: &Option<Str>) -> Option<&'r str> {
        let key = key.as_deref()?;
        body.iter().find_map(|(k, v)| match v {
            Value::Str(s) if &**k == key => Some(&**s),
            _ => None,
        })
    }

    fn topic<'r>(&'r self, body: &'r Map) -> &'r str {
        let default = &*self.topics[0];
        let Some(named) = Self::string_of(body, &self.topic_key) else {
            return default;
        };
        if self.topics.iter().any(|t| &**t == named) {
            return named;
        }
        // Fluent Bit's dynamic topics: no commas, at most 249 bytes.
        if self.dynamic_topic && !named.contains(',') && !named.is_empty() && named.len() <= 249 {
            return named;
        }
        default
    }

    /// The message of `rec` into `out`; `Err` says why the record has none (format
    /// raw without a string `raw_log_key`, gelf without a short message).
    fn encode(&self, rec: &Record, out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        match self.format {
            Format::Json => {
                format::write_json_object(out, rec.time, &Map::new(), &rec.body, &self.json)
            }
            Format::Msgpack => self.write_msgpack(rec, out),
            Format::Gelf => format::write_gelf_record(out, rec.time, &rec.body, &self.gelf)
                .map_err(|e| format!("no GELF form: {e} (see gelf_short_message_key)"))?,
            Format::Raw => match Self::string_of(&rec.body, &self.raw_log_key) {
                Some(s) => out.extend_from_slice(s.as_bytes()),
                None => {
                    return Err(format!(
                        "no string '{}' (format raw sends that key's value)",
                        self.raw_log_key.as_deref().unwrap_or("")
                    ))
                }
            },
        }
        Ok(())
    }

    /// The record with the timestamp key first, every key kept (msgpack_pack_object).
    fn write_msgpack(&self, rec: &Record, out: &mut Vec<u8>) {
        let key = self.json.date_key.as_deref().unwrap_or("@timestamp");
        let _ = rmp::encode::write_map_len(out, rec.body.len() as u32 + 1);
        let _ = rmp::encode::write_str(out, key);
        match self.json.date_format {
            DateFormat::Iso8601 | DateFormat::Iso8601Ns => {
                let mut text = Vec::with_capacity(32);
                format::write_date_text(&mut text, rec.time, self.json.date_format);
                let _ = rmp::encode::write_str_len(out, text.len() as u32);
                out.extend_from_slice(&text);
            }
            _ => {
                let _ = rmp::encode::write_f64(out, rec.time.as_f64());
            }
        }
        for (k, v) in &rec.body {
            let _ = rmp::encode::write_str(out, k);
            format::write_msgpack_value(out, v);
        }
    }
}

/// What one flush found, for the engine's verdict.
#[derive(Default)]
struct Tally {
    resend: Vec<usize>,
    dropped: u64,
    first_error: Option<String>,
}

impl Tally {
    fn note(&mut self, line: String) {
        if self.first_error.is_none() {
            self.first_error = Some(line);
        }
    }
}

impl KafkaOutput {
    fn settle(&self, idx: usize, outcome: Outcome, tally: &mut Tally) {
        let sh = &self.shared;
        match outcome {
            Outcome::Delivered => sh.context.recovered(&format!(
                "the brokers '{}' acknowledge messages again",
                sh.brokers
            )),
            Outcome::Resend(e) => {
                let (class, line) = sh.context.describe(&e);
                tally.note(sh.context.problem(class, || line));
                tally.resend.push(idx);
            }
            Outcome::Refused(e) => {
                crate::warn!(
                    "{} a record was refused by the broker and dropped: {e} (raise the topic's \
                     max.message.bytes, or rdkafka.message.max.bytes, for large records)",
                    sh.prefix
                );
                tally.dropped += 1;
            }
        }
    }

    async fn produce(&mut self, chunk: &Chunk) -> FlushResult {
        let sh = self.shared.clone();
        let producer = match sh.producer() {
            Ok(p) => p,
            Err(e) => return FlushResult::Retry(e),
        };
        let records = &chunk.records;
        let mut tally = Tally::default();
        let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
        let mut unformatted = 0u64;
        let mut why = String::new();
        let mut i = 0;
        let mut full_waits = 0u32;
        while i < records.len() {
            let rec = &records[i];
            if let Err(e) = sh.encode(rec, &mut self.buf) {
                unformatted += 1;
                why = e;
                i += 1;
                continue;
            }
            let key =
                Shared::string_of(&rec.body, &sh.message_key_field).or(sh.message_key.as_deref());
            let mut msg: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(sh.topic(&rec.body)).payload(&self.buf[..]);
            if let Some(k) = key {
                msg = msg.key(k);
            }
            match producer.send_result(msg) {
                Ok(delivery) => {
                    pending.push_back((i, delivery));
                    i += 1;
                    full_waits = 0;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    full_waits += 1;
                    if sh.queue_full_retries > 0 && full_waits > sh.queue_full_retries {
                        crate::warn!(
                            "{} librdkafka's queue stayed full: the rest of the chunk is retried \
                             later (raise rdkafka.queue.buffering.max.messages or \
                             rdkafka.queue.buffering.max.kbytes)",
                            sh.prefix
                        );
                        tally.note("librdkafka's queue is full".into());
                        tally.resend.extend(i..records.len());
                        break;
                    }
                    // Room comes back as deliveries complete: wait for the oldest, or a
                    // second when none of this chunk is in flight (Fluent Bit's wait).
                    match pending.pop_front() {
                        Some((idx, d)) => {
                            let o = outcome(d.await);
                            self.settle(idx, o, &mut tally);
                        }
                        None => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
                Err((e, _)) => {
                    let o = if is_permanent(&e) {
                        Outcome::Refused(e)
                    } else {
                        Outcome::Resend(e)
                    };
                    self.settle(i, o, &mut tally);
                    i += 1;
                }
            }
        }
        while let Some((idx, d)) = pending.pop_front() {
            let o = outcome(d.await);
            self.settle(idx, o, &mut tally);
        }
        if unformatted > 0 {
            crate::warn!("{} {unformatted} record(s) dropped: {why}", sh.prefix);
            tally.dropped += unformatted;
        }
        tally.resend.sort_unstable();
        if tally.resend.is_empty() && tally.dropped == 0 {
            return FlushResult::Ok;
        }
        metrics::add(&sh.resent, tally.resend.len() as u64);
        FlushResult::Partial(Partial {
            reason: format!(
                "{} of {} message(s) not acknowledged: {}",
                tally.resend.len(),
                records.len(),
                tally.first_error.unwrap_or_default()
            ),
            retry: tally.resend,
            dropped: tally.dropped,
            after: None,
        })
    }
}

impl Output for KafkaOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(self.produce(chunk))
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(KafkaOutput {
            shared: self.shared.clone(),
            buf: Vec::with_capacity(4096),
        })
    }
}
