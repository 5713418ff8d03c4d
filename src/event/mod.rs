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

/// A deep copy of `map` whose strings are new allocations (no reference count shared
/// with `map`). Records cloned from it share counts only among themselves, so a
/// batch made on one thread and dropped on another does not contend with the next
/// batch for the same counters.
pub fn unshared(map: &Map) -> Map {
    fn value(v: &Value) -> Value {
        match v {
            Value::Str(s) => Value::Str(Str::from(&**s)),
            Value::Bin(b) => Value::Bin(Arc::from(&**b)),
            Value::Array(a) => Value::Array(a.iter().map(value).collect()),
            Value::Map(m) => Value::Map(unshared(m)),
            other => other.clone(),
        }
    }
    map.iter()
        .map(|(k, v)| (Str::from(&**k), value(v)))
        .collect()
}

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
    /// The bytes this value takes in msgpack, encoded as Fluent Bit (msgpack-c) and
    /// `write_msgpack_value` encode it: the smallest form of each integer, doubles as
    /// float64.
    pub fn encoded_len(&self) -> u64 {
        match self {
            Value::Nil | Value::Bool(_) => 1,
            Value::Int(i) => int_len(*i),
            Value::UInt(u) => uint_len(*u),
            Value::Float(_) => 9,
            Value::Str(s) => str_len(s.len()),
            Value::Bin(b) => {
                let n = b.len();
                n as u64 + 2 + (n > 0xff) as u64 + 2 * (n > 0xffff) as u64
            }
            Value::Array(a) => {
                container_len(a.len()) + a.iter().map(Value::encoded_len).sum::<u64>()
            }
            Value::Map(m) => map_len(m),
        }
    }
}

// The header sizes below are sums of comparisons rather than matches: no branch per
// value on the hot path (every batch is measured at its input).

fn uint_len(u: u64) -> u64 {
    1 + (u > 0x7f) as u64
        + (u > 0xff) as u64
        + 2 * (u > 0xffff) as u64
        + 4 * (u > 0xffff_ffff) as u64
}

fn int_len(i: i64) -> u64 {
    if i >= 0 {
        return uint_len(i as u64);
    }
    1 + (i < -32) as u64
        + (i < -128) as u64
        + 2 * (i < -32768) as u64
        + 4 * (i < -2147483648) as u64
}

#[inline]
/// The encoded size of a string of `n` bytes.
pub fn str_len(n: usize) -> u64 {
    n as u64 + 1 + (n > 31) as u64 + (n > 0xff) as u64 + 2 * (n > 0xffff) as u64
}

/// The encoded size of a map or array header of `n` entries.
#[inline]
pub fn container_len(n: usize) -> u64 {
    1 + 2 * (n > 15) as u64 + 2 * (n > 0xffff) as u64
}

/// The encoded size of a map.
pub fn map_len(m: &Map) -> u64 {
    container_len(m.len())
        + m.iter()
            .map(|(k, v)| str_len(k.len()) + v.encoded_len())
            .sum::<u64>()
}

impl Record {
    /// The bytes of this record as a Fluent Bit event, `[[time, metadata], body]` in
    /// msgpack with an EventTime (what Fluent Bit counts in `fluentbit_input_bytes_total`
    /// and holds against `mem_buf_limit`).
    pub fn encoded_len(&self) -> u64 {
        // Two array headers, the EventTime (fixext 8), the two maps.
        2 + 10 + map_len(&self.metadata) + map_len(&self.body)
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
    /// [`Chunk::encoded_len`], worked out once for every output that delivers it.
    bytes: std::sync::OnceLock<u64>,
}

impl Chunk {
    /// A chunk of log records.
    pub fn new(tag: Tag, records: Vec<Record>) -> Chunk {
        Chunk {
            tag,
            records,
            metrics: Vec::new(),
            bytes: std::sync::OnceLock::new(),
        }
    }

    /// Records the chunk's [`Chunk::encoded_len`] when it is already known (the inputs
    /// measured the records and nothing changed them since).
    pub fn set_encoded_len(&mut self, bytes: u64) {
        self.bytes = std::sync::OnceLock::from(bytes);
    }

    /// The bytes of the chunk's events as Fluent Bit counts them (records as events,
    /// metric sets by their approximate encoded size); computed on first use.
    pub fn encoded_len(&self) -> u64 {
        *self.bytes.get_or_init(|| {
            self.records.iter().map(Record::encoded_len).sum::<u64>()
                + self.metrics.iter().map(|m| m.approx_size()).sum::<u64>()
        })
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
