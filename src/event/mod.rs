//! Records as Fluent Bit's event format models them: `[[time, metadata], body]`.
//! Fluent Bit: include/fluent-bit/flb_log_event.h

pub mod accessor;
pub mod format;
pub mod metrics;
pub mod template;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Shared immutable string. Keys are interned per plugin so cloning is a refcount bump.
pub type Str = Arc<str>;

/// A tag: the routing key of a record (`random.0`, `kube.var.log...`).
pub type Tag = Arc<str>;

/// Fluent Bit's event time: seconds + nanoseconds (msgpack ext type 0 on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime {
    pub secs: i64,
    pub nanos: u32,
}

impl EventTime {
    pub const fn new(secs: i64, nanos: u32) -> Self {
        EventTime { secs, nanos }
    }

    /// The wall clock now.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        EventTime {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }

    /// Seconds as a double, the way Fluent Bit's `json_date_format double` computes it.
    pub fn as_f64(&self) -> f64 {
        self.secs as f64 + self.nanos as f64 / 1e9
    }
}

/// Insertion-ordered, duplicates allowed, like a msgpack map: key order is part of the
/// output bytes, so this is not a HashMap.
pub type Map = Vec<(Str, Value)>;

/// A msgpack-like value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Str),
    Bin(Arc<[u8]>),
    Array(Vec<Value>),
    Map(Map),
}

impl Value {
    /// Converts parsed JSON (key order preserved) into a record value.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => Value::Str(Arc::from(s.as_str())),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// One log event, `[[time, metadata], body]` in Fluent Bit's event format.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub time: EventTime,
    pub metadata: Map,
    pub body: Map,
}

impl Value {
    /// About the bytes this value takes encoded (msgpack-like), for buffer accounting.
    pub fn approx_size(&self) -> u64 {
        match self {
            Value::Nil | Value::Bool(_) => 1,
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => 9,
            Value::Str(s) => s.len() as u64 + 5,
            Value::Bin(b) => b.len() as u64 + 5,
            Value::Array(a) => 5 + a.iter().map(Value::approx_size).sum::<u64>(),
            Value::Map(m) => 5 + map_size(m),
        }
    }
}

fn map_size(m: &Map) -> u64 {
    m.iter()
        .map(|(k, v)| k.len() as u64 + 5 + v.approx_size())
        .sum()
}

impl Record {
    /// About the bytes this record takes encoded (time, metadata, body).
    pub fn approx_size(&self) -> u64 {
        16 + map_size(&self.metadata) + map_size(&self.body)
    }

    pub fn new(time: EventTime, body: Map) -> Self {
        Record {
            time,
            metadata: Map::new(),
            body,
        }
    }
}

/// Records that share a tag; the unit that moves from the engine to outputs
/// (fanned out as `Arc<Chunk>`). A chunk carries one signal: log records, or metric
/// sets (then `records` is empty); only outputs that take metrics get the latter.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub tag: Tag,
    pub records: Vec<Record>,
    /// Metric sets, in the order the inputs sent them (empty in a log chunk).
    pub metrics: Vec<Arc<metrics::MetricSet>>,
}

impl Chunk {
    /// A chunk of log records.
    pub fn new(tag: Tag, records: Vec<Record>) -> Chunk {
        Chunk {
            tag,
            records,
            metrics: Vec::new(),
        }
    }

    /// Events in the chunk: records, or metric sets (one each, as Fluent Bit counts a
    /// metrics context as one event).
    pub fn events(&self) -> usize {
        self.records.len() + self.metrics.len()
    }

    pub fn is_metrics(&self) -> bool {
        !self.metrics.is_empty()
    }
}
