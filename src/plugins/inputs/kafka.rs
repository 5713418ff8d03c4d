//! `kafka` input: a consumer-group member; each message a record.
//! Fluent Bit: plugins/in_kafka/in_kafka.c
//!
//! Records as Fluent Bit makes them, stamped when read:
//! `{"topic": …, "partition": …, "offset": …, "error": null, "key": … or null,
//! "payload": …}`; with `format json` a payload that parses as JSON is that value,
//! otherwise (and with `format none`) the payload's text.
//!
//! Offsets (with the default `enable_auto_commit off`): a partition's offset is
//! committed only once every output is done with the records before it — the same
//! rule as tail's offsets and the forward input's acks — so a consumer killed
//! mid-stream loses nothing: the group gives its partitions to another member, which
//! reads from the last committed offset (records in flight may arrive twice). Fluent
//! Bit commits when records are buffered. With `enable_auto_commit on`, librdkafka
//! commits what was read, as in Fluent Bit.
//!
//! The input waits on the consumer instead of polling every `poll_ms` (accepted for
//! compatibility): a message is read as soon as librdkafka has it, and each batch
//! takes what is ready, up to `buffer_max_size` bytes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::MAX_BATCH;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Record, Str, Value};
use crate::kafka::Context;
use crate::plugins::outputs::kafka::{
    client_config, AWS_MSK_IAM, AWS_MSK_IAM_CLUSTER_ARN, BROKERS, CLIENT_ID, RDKAFKA,
};
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    BROKERS,
    PropSpec::new(
        "topics",
        PropKind::Str,
        None,
        "Topics to consume, comma-separated (required).",
    ),
    PropSpec::new(
        "format",
        PropKind::Enum(&["none", "json"]),
        Some("none"),
        "none: the payload as a string; json: a payload that is JSON becomes that value.",
    ),
    CLIENT_ID,
    PropSpec::new(
        "group_id",
        PropKind::Str,
        Some("fluent-bit"),
        "The consumer group: members share the topics' partitions.",
    ),
    PropSpec::new(
        "poll_ms",
        PropKind::Int,
        Some("500"),
        "Fluent Bit's polling interval; agent reads messages as they arrive.",
    )
    .range(1, 3_600_000),
    PropSpec::new(
        "poll_timeout_ms",
        PropKind::Int,
        Some("1"),
        "Fluent Bit's poll timeout in threaded mode; agent reads messages as they arrive.",
    )
    .range(0, 3_600_000),
    PropSpec::new(
        "buffer_max_size",
        PropKind::Size,
        Some("4M"),
        "Most bytes of messages in one batch (also librdkafka's fetch.max.bytes + 512).",
    ),
    PropSpec::new(
        "enable_auto_commit",
        PropKind::Bool,
        Some("false"),
        "Let librdkafka commit what was read; off: commit only what outputs are done with.",
    ),
    RDKAFKA,
    AWS_MSK_IAM,
    AWS_MSK_IAM_CLUSTER_ARN,
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "kafka",
    description: "Kafka consumer input plugin",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

struct KafkaInput {
    config: rdkafka::ClientConfig,
    brokers: String,
    topics: Vec<String>,
    json: bool,
    max_bytes: u64,
    auto_commit: bool,
}

fn build(props: &Props, _ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let topics: Vec<String> = props
        .str("topics")
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if topics.is_empty() {
        return Err(ConfigError::invalid(
            props.span(),
            "[config] kafka: no topics specified",
            Some("add 'topics name' (comma-separated for several)".into()),
        ));
    }
    let auto_commit = props.bool("enable_auto_commit") == Some(true);
    let max_bytes = props.size("buffer_max_size").unwrap_or(4_000_000);
    if max_bytes > 0 && max_bytes <= 1024 {
        return Err(props.error(
            "buffer_max_size",
            "a size above 1k (e.g. 4M), or 0 for no limit",
        ));
    }
    let fetch_max = (max_bytes.saturating_sub(512)).to_string();
    let receive_max = max_bytes.to_string();
    let mut forced: Vec<(&str, &str)> = vec![(
        "enable.auto.commit",
        if auto_commit { "true" } else { "false" },
    )];
    if !auto_commit {
        forced.push(("enable.auto.offset.store", "false"));
    }
    if max_bytes > 0 {
        forced.push(("fetch.max.bytes", &fetch_max));
        forced.push(("receive.message.max.bytes", &receive_max));
    }
    let config = client_config(
        props,
        Some(props.str("group_id").unwrap_or("fluent-bit")),
        &forced,
    )?;
    Ok(Box::new(KafkaInput {
        config,
        brokers: props.str("brokers").unwrap_or_default().to_string(),
        topics,
        json: props
            .str("format")
            .is_some_and(|f| f.eq_ignore_ascii_case("json")),
        max_bytes: if max_bytes == 0 { u64::MAX } else { max_bytes },
        auto_commit,
    }))
}

/// One record, as Fluent Bit's `process_message` lays it out.
fn record(msg: &impl Message, json: bool, topic: &Str) -> Record {
    let key = match msg.key() {
        Some(k) => Value::Str(Str::from(String::from_utf8_lossy(k))),
        None => Value::Nil,
    };
    let payload = match msg.payload() {
        None => Value::Nil,
        Some(p) => match json
            .then(|| serde_json::from_slice::<serde_json::Value>(p).ok())
            .flatten()
        {
            Some(v) => Value::from_json(&v),
            None => Value::Str(Str::from(String::from_utf8_lossy(p))),
        },
    };
    Record::new(
        EventTime::now(),
        vec![
            (Str::from("topic"), Value::Str(topic.clone())),
            (Str::from("partition"), Value::Int(msg.partition() as i64)),
            (Str::from("offset"), Value::Int(msg.offset())),
            (Str::from("error"), Value::Nil),
            (Str::from("key"), key),
            (Str::from("payload"), payload),
        ],
    )
}

/// Which offsets may be committed: per partition, the batches in the order they were
/// read, each with the offset after its last message; a partition's commit advances
/// over the batches at its front that every output is done with.
#[derive(Default)]
struct Offsets {
    next_batch: u64,
    partitions: HashMap<Partition, VecDeque<Pending>>,
    batches: HashMap<u64, Vec<Partition>>,
}

/// A topic's partition.
type Partition = (Str, i32);

/// A batch's part of a partition: (batch id, offset after its last message, done).
type Pending = (u64, i64, bool);

impl Offsets {
    /// Registers a batch that read up to (and including) `last` on each partition.
    fn read(&mut self, last: &HashMap<Partition, i64>) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        for (tp, off) in last {
            self.partitions
                .entry(tp.clone())
                .or_default()
                .push_back((id, off + 1, false));
        }
        self.batches.insert(id, last.keys().cloned().collect());
        id
    }

    /// A batch is done with: the offsets that may now be committed.
    fn done(&mut self, id: u64) -> Vec<(Partition, i64)> {
        let mut commit = Vec::new();
        for tp in self.batches.remove(&id).unwrap_or_default() {
            let Some(q) = self.partitions.get_mut(&tp) else {
                continue;
            };
            if let Some(e) = q.iter_mut().find(|e| e.0 == id) {
                e.2 = true;
            }
            let mut upto = None;
            while q.front().is_some_and(|e| e.2) {
                upto = q.pop_front().map(|e| e.1);
            }
            if let Some(o) = upto {
                commit.push((tp.clone(), o));
            }
            if q.is_empty() {
                self.partitions.remove(&tp);
            }
        }
        commit
    }

    fn in_flight(&self) -> usize {
        self.batches.len()
    }
}

fn commit(consumer: &StreamConsumer<Context>, offsets: &[(Partition, i64)], mode: CommitMode) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), off) in offsets {
        if tpl
            .add_partition_offset(topic, *partition, Offset::Offset(*off))
            .is_err()
        {
            continue;
        }
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        crate::debug!("[input:kafka] commit failed (read again after a restart): {e}");
    }
}

impl Input for KafkaInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let context = Context::new(format!("[input:kafka:{}]", ctx.name), &self.brokers);
            let consumer: StreamConsumer<Context> = self
                .config
                .create_with_context(context.clone())
                .map_err(|e| {
                    PluginError::Other(format!("cannot create the Kafka consumer: {e}"))
                })?;
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(|e| PluginError::Other(format!("cannot subscribe to {topics:?}: {e}")))?;
            crate::info!(
                "{} brokers='{}' topics='{}'",
                context.prefix(),
                self.brokers,
                self.topics.join(",")
            );
            let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
            let mut offsets = Offsets::default();
            let mut names: HashMap<String, Str> = HashMap::new();
            loop {
                let first = tokio::select! {
                    _ = ctx.shutdown.wait() => break,
                    Some(id) = ack_rx.recv() => {
                        commit(&consumer, &offsets.done(id), CommitMode::Async);
                        continue;
                    }
                    m = consumer.recv() => m,
                };
                let msg = match first {
                    Ok(m) => m,
                    Err(e) => {
                        let (class, line) = context.describe(&e);
                        context.problem(class, || line);
                        continue;
                    }
                };
                context.recovered("reading from the brokers again");
                // Take what is ready now, up to the batch limits.
                let mut records = Vec::new();
                let mut last: HashMap<Partition, i64> = HashMap::new();
                let mut bytes = 0u64;
                let mut next = Some(msg);
                while let Some(m) = next.take() {
                    let topic = match names.get(m.topic()) {
                        Some(t) => t.clone(),
                        None => {
                            let t = Str::from(m.topic());
                            names.insert(m.topic().to_string(), t.clone());
                            t
                        }
                    };
                    bytes += m.payload_len() as u64 + m.key().map_or(0, |k| k.len() as u64);
                    last.insert((topic.clone(), m.partition()), m.offset());
                    records.push(record(&m, self.json, &topic));
                    drop(m);
                    if bytes >= self.max_bytes || records.len() as u64 >= MAX_BATCH {
                        break;
                    }
                    match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                        Ok(Ok(m)) => next = Some(m),
                        Ok(Err(e)) => crate::warn!("{} consumer error: {e}", context.prefix()),
                        Err(_) => {}
                    }
                }
                if self.auto_commit {
                    ctx.out.send(records).await?;
                    continue;
                }
                let id = offsets.read(&last);
                let tx = ack_tx.clone();
                let ack = Box::new(move || {
                    let _ = tx.send(id);
                });
                let tag = ctx.tag.clone();
                ctx.out.send_acked(tag, records, ack).await?;
            }
            // Stopped reading. The engine drains what it holds; commit what it finishes
            // with, until every batch is done or dropped (the agent exiting with records
            // still buffered drops their acks: those are read again at the next start).
            drop(ctx.out);
            drop(ack_tx);
            let mut done = Vec::new();
            while offsets.in_flight() > 0 {
                match ack_rx.recv().await {
                    Some(id) => done.extend(offsets.done(id)),
                    None => break,
                }
            }
            commit(&consumer, &done, CommitMode::Sync);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_commits_only_over_batches_done_in_order() {
        let mut o = Offsets::default();
        let t = Str::from("logs");
        let b0 = o.read(&HashMap::from([((t.clone(), 0), 9), ((t.clone(), 1), 4)]));
        let b1 = o.read(&HashMap::from([((t.clone(), 0), 19)]));
        let b2 = o.read(&HashMap::from([((t.clone(), 0), 29), ((t.clone(), 1), 8)]));
        // The second batch is done first: partition 0 still waits for the first.
        assert!(o.done(b1).is_empty());
        let mut c = o.done(b0);
        c.sort_by_key(|((_, p), _)| *p);
        assert_eq!(c, vec![((t.clone(), 0), 20), ((t.clone(), 1), 5)]);
        let mut c = o.done(b2);
        c.sort_by_key(|((_, p), _)| *p);
        assert_eq!(c, vec![((t.clone(), 0), 30), ((t.clone(), 1), 9)]);
        assert_eq!(o.in_flight(), 0);
        assert!(o.partitions.is_empty());
    }
}
