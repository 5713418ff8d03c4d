//! Records as an OTLP `ExportLogsServiceRequest`, written straight from the chunk into
//! the request buffer in protobuf wire format: no message structs in between, so no
//! string of a record is copied twice (prost messages own their `String`s).
//! Fluent Bit: plugins/out_opentelemetry/opentelemetry_logs.c, opentelemetry_utils.c
//!
//! The mapping, as Fluent Bit 5.1.1 does it for records without an OTLP group (agent
//! has no group records): one `ResourceLogs` with an empty `Resource`, one `ScopeLogs`
//! with an empty `InstrumentationScope`, then per record a `LogRecord` with
//! - `body`: the value of the first `logs_body_key` found (default `$log`, then
//!   `$message`), else the whole record as a key/value list;
//! - `attributes`: every metadata entry but `otlp`; then, with
//!   `logs_body_key_attributes`, the record without the body key; then the entries of
//!   `$otlp['attributes']`, or else of the `logs_attributes_metadata_key` map;
//! - `time_unix_nano`: `$otlp['timestamp']`, else the `logs_timestamp_metadata_key`
//!   value, else the record's time (a key that is there but holds no positive integer
//!   gives 0, as in Fluent Bit); `observed_time_unix_nano` likewise, without a default;
//! - severity number (1 to 24) and text, trace id (16 bytes, or 32 hex digits), span id
//!   (8 bytes or 16 hex digits): `$otlp[...]`, else the `*_metadata_key` in the
//!   metadata, else the `*_message_key` in the record; trace flags from `$otlp` or the
//!   metadata.
//!
//! Values: strings and keys are cut at a NUL byte (Fluent Bit copies them with
//! `strndup`), unsigned integers above `i64::MAX` wrap into `int_value`, null is an
//! `AnyValue` with no value set, binaries are `bytes_value`. Fields are written in
//! field-number order and proto3 defaults left out, as protobuf-c writes them, so the
//! bytes equal Fluent Bit's.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use crate::event::accessor::Accessor;
use crate::event::{Map, Record, Value};

/// Where each `LogRecord` field is looked up (the `logs_*_key` properties).
#[derive(Clone, Debug)]
pub struct Mapping {
    /// `logs_body_key`, in the order given.
    pub body_keys: Vec<Accessor>,
    pub body_key_attributes: bool,
    pub observed_timestamp: Accessor,
    pub timestamp: Accessor,
    pub severity_text: Accessor,
    pub severity_number: Accessor,
    pub trace_flags: Accessor,
    pub span_id: Accessor,
    pub trace_id: Accessor,
    pub attributes: Accessor,
    pub span_id_message: Accessor,
    pub trace_id_message: Accessor,
    pub severity_text_message: Accessor,
    pub severity_number_message: Accessor,
}

/// `$otlp[...]`: what the `opentelemetry` input puts in a record's metadata.
struct Otlp {
    observed_timestamp: Accessor,
    timestamp: Accessor,
    severity_number: Accessor,
    severity_text: Accessor,
    attributes: Accessor,
    trace_id: Accessor,
    span_id: Accessor,
    trace_flags: Accessor,
}

fn otlp_key(name: &str) -> Accessor {
    Accessor::parse(&format!("$otlp['{name}']")).expect("a valid accessor")
}

/// Builds the request bodies of a chunk's records.
pub struct LogsEncoder {
    map: Mapping,
    otlp: Otlp,
    /// Scratch: the path of the body key matched in the current record.
    path: Vec<usize>,
}

/// Why a field was left out of a record (Fluent Bit warns about each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub trace_id: u64,
    pub span_id: u64,
}

/// One record's fields, resolved (borrowing the record).
struct View<'a> {
    time: u64,
    observed: u64,
    severity_number: u64,
    severity_text: Option<&'a str>,
    body: &'a Value,
    whole: Option<&'a Map>,
    metadata: &'a Map,
    /// The record minus the body key, as attributes (logs_body_key_attributes).
    rest: Option<(&'a Map, &'a [usize])>,
    extra: Option<&'a Map>,
    flags: u32,
    trace_id: Option<[u8; 16]>,
    span_id: Option<[u8; 8]>,
}

const NIL: Value = Value::Nil;

impl LogsEncoder {
    pub fn new(map: Mapping) -> LogsEncoder {
        LogsEncoder {
            map,
            otlp: Otlp {
                observed_timestamp: otlp_key("observed_timestamp"),
                timestamp: otlp_key("timestamp"),
                severity_number: otlp_key("severity_number"),
                severity_text: otlp_key("severity_text"),
                attributes: otlp_key("attributes"),
                trace_id: otlp_key("trace_id"),
                span_id: otlp_key("span_id"),
                trace_flags: otlp_key("trace_flags"),
            },
            path: Vec::new(),
        }
    }

    /// Writes the `ExportLogsServiceRequest` of `records` into `out` (cleared first).
    pub fn encode(&mut self, records: &[Record], out: &mut Vec<u8>, skipped: &mut Skipped) {
        out.clear();
        // The records first, then the three enclosing headers (whose lengths depend on
        // them) are put in front: one move of the bytes instead of a sizing pass.
        let mut path = std::mem::take(&mut self.path);
        for rec in records {
            let v = self.view(rec, &mut path, skipped);
            put_len(out, 2, record_len(&v));
            write_record(out, &v);
        }
        self.path = path;
        let records_len = out.len();
        // ScopeLogs { scope: {} (1), log_records (2) }
        let scope_logs = key_len(1) + 1 + records_len;
        // ResourceLogs { resource: {} (1), scope_logs (2) }
        let resource_logs = key_len(1) + 1 + len_field(2, scope_logs);
        let mut head = Vec::with_capacity(24);
        put_len(&mut head, 1, resource_logs);
        put_len(&mut head, 1, 0);
        put_len(&mut head, 2, scope_logs);
        put_len(&mut head, 1, 0);
        out.splice(0..0, head);
    }

    fn view<'a>(
        &self,
        rec: &'a Record,
        path: &'a mut Vec<usize>,
        skipped: &mut Skipped,
    ) -> View<'a> {
        let (m, o, meta) = (&self.map, &self.otlp, &rec.metadata);
        let mut body = None;
        let mut matched = false;
        for key in &m.body_keys {
            if key.kv_pair_path(&rec.body, path).is_some() {
                body = Accessor::at_path(&rec.body, path);
                matched = body.is_some();
                if matched {
                    break;
                }
            }
        }
        let time = match o.timestamp.ra_value(meta) {
            Some(v) => positive(v).unwrap_or(0),
            None => match m.timestamp.ra_value(meta) {
                Some(v) => positive(v).unwrap_or(0),
                None => (rec.time.secs as u64)
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(rec.time.nanos as u64),
            },
        };
        let observed = match o.observed_timestamp.ra_value(meta) {
            Some(v) => positive(v).unwrap_or(0),
            None => m
                .observed_timestamp
                .ra_value(meta)
                .and_then(positive)
                .unwrap_or(0),
        };
        let severity_number = [
            o.severity_number.ra_value(meta),
            m.severity_number.ra_value(meta),
            m.severity_number_message.ra_value(&rec.body),
        ]
        .into_iter()
        .flatten()
        .filter_map(positive)
        .find(|n| (1..=24).contains(n))
        .unwrap_or(0);
        let severity_text = [
            o.severity_text.ra_value(meta),
            m.severity_text.ra_value(meta),
            m.severity_text_message.ra_value(&rec.body),
        ]
        .into_iter()
        .flatten()
        .find_map(|v| match v {
            Value::Str(s) => Some(cut(s)),
            _ => None,
        });
        let extra = match o.attributes.ra_value(meta) {
            Some(v) => as_map(v),
            None => m.attributes.ra_value(meta).and_then(as_map),
        };
        let trace_id = [
            o.trace_id.ra_value(meta),
            m.trace_id.ra_value(meta),
            m.trace_id_message.ra_value(&rec.body),
        ]
        .into_iter()
        .flatten()
        .find_map(|v| {
            let id = id::<16>(v);
            skipped.trace_id += id.is_none() as u64;
            id
        });
        let span_id = [
            o.span_id.ra_value(meta),
            m.span_id.ra_value(meta),
            m.span_id_message.ra_value(&rec.body),
        ]
        .into_iter()
        .flatten()
        .find_map(|v| {
            let id = id::<8>(v);
            skipped.span_id += id.is_none() as u64;
            id
        });
        let flags = [o.trace_flags.ra_value(meta), m.trace_flags.ra_value(meta)]
            .into_iter()
            .flatten()
            .find_map(positive)
            .map_or(0, |f| f as u32);
        let rest = (matched && m.body_key_attributes).then_some((&rec.body, &path[..]));
        View {
            time,
            observed,
            severity_number,
            severity_text,
            body: body.unwrap_or(&NIL),
            whole: (!matched).then_some(&rec.body),
            metadata: meta,
            rest,
            extra,
            flags,
            trace_id,
            span_id,
        }
    }
}

/// msgpack's positive integer.
fn positive(v: &Value) -> Option<u64> {
    match v {
        Value::UInt(u) => Some(*u),
        Value::Int(i) if *i >= 0 => Some(*i as u64),
        _ => None,
    }
}

fn as_map(v: &Value) -> Option<&Map> {
    match v {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

/// A trace or span id: `N` bytes as a binary, or `2N` hex digits as a string.
fn id<const N: usize>(v: &Value) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    match v {
        Value::Bin(b) if b.len() == N => out.copy_from_slice(b),
        Value::Str(s) if s.len() == 2 * N => {
            for (i, pair) in s.as_bytes().chunks(2).enumerate() {
                let hex = std::str::from_utf8(pair).ok()?;
                out[i] = u8::from_str_radix(hex, 16).ok()?;
            }
        }
        _ => return None,
    }
    Some(out)
}

/// A string as `strndup` copies it: up to its first NUL.
fn cut(s: &str) -> &str {
    match s.find('\0') {
        Some(i) => &s[..i],
        None => s,
    }
}

fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// The length of an `AnyValue` message holding `v`.
fn any_len(v: &Value) -> usize {
    match v {
        Value::Nil => 0,
        Value::Bool(_) => 2,
        Value::Int(i) => 1 + encoded_len_varint(*i as u64),
        Value::UInt(u) => 1 + encoded_len_varint(*u),
        Value::Float(_) => 9,
        Value::Str(s) => len_field(1, cut(s).len()),
        Value::Bin(b) => len_field(7, b.len()),
        Value::Array(a) => len_field(5, array_len(a, &[])),
        Value::Map(m) => len_field(6, kvlist_len(m, &[])),
    }
}

/// `ArrayValue`'s length, without the element at `skip` (a path from there down).
fn array_len(a: &[Value], skip: &[usize]) -> usize {
    a.iter()
        .enumerate()
        .map(|(i, v)| match skip.split_first() {
            Some((&j, [])) if j == i => 0,
            Some((&j, rest)) if j == i => len_field(1, any_len_without(v, rest)),
            _ => len_field(1, any_len(v)),
        })
        .sum()
}

/// `KeyValueList`'s length (or a list of attributes'), without the entry at `skip`.
fn kvlist_len(m: &Map, skip: &[usize]) -> usize {
    m.iter()
        .enumerate()
        .map(|(i, (k, v))| match skip.split_first() {
            Some((&j, [])) if j == i => 0,
            Some((&j, rest)) if j == i => len_field(1, kv_len_with(k, any_len_without(v, rest))),
            _ => len_field(1, kv_len(k, v)),
        })
        .sum()
}

fn any_len_without(v: &Value, skip: &[usize]) -> usize {
    match v {
        Value::Array(a) => len_field(5, array_len(a, skip)),
        Value::Map(m) => len_field(6, kvlist_len(m, skip)),
        v => any_len(v),
    }
}

fn kv_len(k: &str, v: &Value) -> usize {
    kv_len_with(k, any_len(v))
}

fn kv_len_with(k: &str, value_len: usize) -> usize {
    let k = cut(k);
    (if k.is_empty() {
        0
    } else {
        len_field(1, k.len())
    }) + len_field(2, value_len)
}

fn write_any(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Nil => {}
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            out.push(*b as u8);
        }
        Value::Int(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Value::UInt(u) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*u, out);
        }
        Value::Float(f) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Str(s) => {
            let s = cut(s);
            put_len(out, 1, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bin(b) => {
            put_len(out, 7, b.len());
            out.extend_from_slice(b);
        }
        Value::Array(a) => write_array(out, a, &[]),
        Value::Map(m) => write_kvlist_value(out, m, &[]),
    }
}

fn write_any_without(out: &mut Vec<u8>, v: &Value, skip: &[usize]) {
    match v {
        Value::Array(a) => write_array(out, a, skip),
        Value::Map(m) => write_kvlist_value(out, m, skip),
        v => write_any(out, v),
    }
}

fn write_array(out: &mut Vec<u8>, a: &[Value], skip: &[usize]) {
    put_len(out, 5, array_len(a, skip));
    for (i, v) in a.iter().enumerate() {
        match skip.split_first() {
            Some((&j, [])) if j == i => {}
            Some((&j, rest)) if j == i => {
                put_len(out, 1, any_len_without(v, rest));
                write_any_without(out, v, rest);
            }
            _ => {
                put_len(out, 1, any_len(v));
                write_any(out, v);
            }
        }
    }
}

fn write_kvlist_value(out: &mut Vec<u8>, m: &Map, skip: &[usize]) {
    put_len(out, 6, kvlist_len(m, skip));
    write_kvs(out, 1, m, skip);
}

/// Each entry of `m` but the one at `skip`, as `KeyValue` field `tag`.
fn write_kvs(out: &mut Vec<u8>, tag: u32, m: &Map, skip: &[usize]) {
    for (i, (k, v)) in m.iter().enumerate() {
        match skip.split_first() {
            Some((&j, [])) if j == i => {}
            Some((&j, rest)) if j == i => {
                let vlen = any_len_without(v, rest);
                put_len(out, tag, kv_len_with(k, vlen));
                write_key(out, k);
                put_len(out, 2, vlen);
                write_any_without(out, v, rest);
            }
            _ => {
                let vlen = any_len(v);
                put_len(out, tag, kv_len_with(k, vlen));
                write_key(out, k);
                put_len(out, 2, vlen);
                write_any(out, v);
            }
        }
    }
}

fn write_key(out: &mut Vec<u8>, k: &str) {
    let k = cut(k);
    if !k.is_empty() {
        put_len(out, 1, k.len());
        out.extend_from_slice(k.as_bytes());
    }
}

/// The metadata as attributes: every entry but `otlp`.
fn metadata_attrs(m: &Map) -> impl Iterator<Item = (&str, &Value)> {
    m.iter()
        .filter(|(k, _)| &**k != "otlp")
        .map(|(k, v)| (&**k, v))
}

fn record_len(v: &View) -> usize {
    let mut n = 0;
    if v.time != 0 {
        n += 1 + 8;
    }
    if v.severity_number != 0 {
        n += 1 + encoded_len_varint(v.severity_number);
    }
    if let Some(t) = v.severity_text.filter(|t| !t.is_empty()) {
        n += len_field(3, t.len());
    }
    n += len_field(
        5,
        match v.whole {
            Some(m) => len_field(6, kvlist_len(m, &[])),
            None => any_len(v.body),
        },
    );
    n += metadata_attrs(v.metadata)
        .map(|(k, val)| len_field(6, kv_len(k, val)))
        .sum::<usize>();
    if let Some((body, path)) = v.rest {
        n += kvlist_len(body, path);
    }
    if let Some(extra) = v.extra {
        n += kvlist_len(extra, &[]);
    }
    if v.flags != 0 {
        n += 1 + 4;
    }
    if v.trace_id.is_some() {
        n += len_field(9, 16);
    }
    if v.span_id.is_some() {
        n += len_field(10, 8);
    }
    if v.observed != 0 {
        n += 1 + 8;
    }
    n
}

fn write_record(out: &mut Vec<u8>, v: &View) {
    if v.time != 0 {
        encode_key(1, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.time.to_le_bytes());
    }
    if v.severity_number != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint(v.severity_number, out);
    }
    if let Some(t) = v.severity_text.filter(|t| !t.is_empty()) {
        put_len(out, 3, t.len());
        out.extend_from_slice(t.as_bytes());
    }
    match v.whole {
        Some(m) => {
            put_len(out, 5, len_field(6, kvlist_len(m, &[])));
            write_kvlist_value(out, m, &[]);
        }
        None => {
            put_len(out, 5, any_len(v.body));
            write_any(out, v.body);
        }
    }
    for (k, val) in metadata_attrs(v.metadata) {
        let vlen = any_len(val);
        put_len(out, 6, kv_len_with(k, vlen));
        write_key(out, k);
        put_len(out, 2, vlen);
        write_any(out, val);
    }
    // A list of attributes has the same shape as a KeyValueList's entries (field 1
    // there, 6 here, of equal key length), so the same writer serves both.
    if let Some((body, path)) = v.rest {
        write_kvs(out, 6, body, path);
    }
    if let Some(extra) = v.extra {
        write_kvs(out, 6, extra, &[]);
    }
    if v.flags != 0 {
        encode_key(8, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&v.flags.to_le_bytes());
    }
    if let Some(id) = &v.trace_id {
        put_len(out, 9, 16);
        out.extend_from_slice(id);
    }
    if let Some(id) = &v.span_id {
        put_len(out, 10, 8);
        out.extend_from_slice(id);
    }
    if v.observed != 0 {
        encode_key(11, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.observed.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    //! The encoder's bytes read back with prost-derived messages written from
    //! opentelemetry-proto's .proto files (a second, independent reading of the wire
    //! format; the integration tests use the project's Python classes).
    use super::*;
    use crate::event::EventTime;
    use prost::Message;
    use std::sync::Arc;

    #[derive(Clone, PartialEq, Message)]
    struct Request {
        #[prost(message, repeated, tag = "1")]
        resource_logs: Vec<ResourceLogs>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        resource: Option<Empty>,
        #[prost(message, repeated, tag = "2")]
        scope_logs: Vec<ScopeLogs>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Empty {}
    #[derive(Clone, PartialEq, Message)]
    struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        scope: Option<Empty>,
        #[prost(message, repeated, tag = "2")]
        log_records: Vec<LogRecord>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct LogRecord {
        #[prost(fixed64, tag = "1")]
        time_unix_nano: u64,
        #[prost(fixed64, tag = "11")]
        observed_time_unix_nano: u64,
        #[prost(int32, tag = "2")]
        severity_number: i32,
        #[prost(string, tag = "3")]
        severity_text: String,
        #[prost(message, optional, tag = "5")]
        body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        attributes: Vec<KeyValue>,
        #[prost(fixed32, tag = "8")]
        flags: u32,
        #[prost(bytes = "vec", tag = "9")]
        trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "10")]
        span_id: Vec<u8>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct KeyValue {
        #[prost(string, tag = "1")]
        key: String,
        #[prost(message, optional, tag = "2")]
        value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct AnyValue {
        #[prost(oneof = "Any", tags = "1, 2, 3, 4, 5, 6, 7")]
        value: Option<Any>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    enum Any {
        #[prost(string, tag = "1")]
        Str(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        Array(List),
        #[prost(message, tag = "6")]
        KvList(KvList),
        #[prost(bytes = "vec", tag = "7")]
        Bytes(Vec<u8>),
    }
    #[derive(Clone, PartialEq, Message)]
    struct List {
        #[prost(message, repeated, tag = "1")]
        values: Vec<AnyValue>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct KvList {
        #[prost(message, repeated, tag = "1")]
        values: Vec<KeyValue>,
    }

    fn s(x: &str) -> Value {
        Value::Str(Arc::from(x))
    }
    fn map(kv: &[(&str, Value)]) -> Map {
        kv.iter().map(|(k, v)| (Arc::from(*k), v.clone())).collect()
    }
    fn key(k: &str) -> Accessor {
        Accessor::parse(k).unwrap()
    }
    fn mapping(body_keys: &[&str], body_key_attributes: bool) -> Mapping {
        Mapping {
            body_keys: body_keys.iter().map(|k| key(k)).collect(),
            body_key_attributes,
            observed_timestamp: key("$ObservedTimestamp"),
            timestamp: key("$Timestamp"),
            severity_text: key("$SeverityText"),
            severity_number: key("$SeverityNumber"),
            trace_flags: key("$TraceFlags"),
            span_id: key("$SpanId"),
            trace_id: key("$TraceId"),
            attributes: key("$Attributes"),
            span_id_message: key("$SpanId"),
            trace_id_message: key("$TraceId"),
            severity_text_message: key("$SeverityText"),
            severity_number_message: key("$SeverityNumber"),
        }
    }
    fn encode(m: Mapping, records: &[Record]) -> (Vec<LogRecord>, Skipped) {
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        LogsEncoder::new(m).encode(records, &mut out, &mut skipped);
        let req = Request::decode(&out[..]).unwrap();
        // Every byte accounted for: the message written back is the same bytes.
        assert_eq!(req.encode_to_vec(), out);
        assert_eq!(req.resource_logs.len(), 1);
        assert_eq!(req.resource_logs[0].resource, Some(Empty {}));
        let sl = &req.resource_logs[0].scope_logs;
        assert_eq!((sl.len(), &sl[0].scope), (1, &Some(Empty {})));
        (sl[0].log_records.clone(), skipped)
    }
    fn str_any(x: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(Any::Str(x.into())),
        })
    }

    #[test]
    fn nested_body_key_is_the_body_and_the_rest_are_attributes() {
        let body = map(&[
            (
                "req",
                Value::Map(map(&[("line", s("GET /")), ("code", Value::UInt(200))])),
            ),
            ("n", Value::Int(-7)),
        ]);
        let rec = Record {
            time: EventTime { secs: 2, nanos: 5 },
            metadata: map(&[
                (
                    "otlp",
                    Value::Map(map(&[("severity_number", Value::UInt(30))])),
                ),
                ("m", Value::Bool(false)),
            ]),
            body,
        };
        let (logs, _) = encode(mapping(&["$nope", "$req['line']"], true), &[rec]);
        let l = &logs[0];
        assert_eq!(l.time_unix_nano, 2_000_000_005);
        assert_eq!(l.severity_number, 0, "30 is no severity");
        assert_eq!(l.body, str_any("GET /"));
        let keys: Vec<&str> = l.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["m", "req", "n"], "metadata first, otlp left out");
        let req = l.attributes[1].value.clone().unwrap().value.unwrap();
        let Any::KvList(req) = req else {
            panic!("{req:?}")
        };
        assert_eq!(req.values.len(), 1);
        assert_eq!(req.values[0].key, "code");
        assert_eq!(
            l.attributes[2].value,
            Some(AnyValue {
                value: Some(Any::Int(-7))
            })
        );
    }

    #[test]
    fn ids_severity_and_times_follow_fluent_bits_precedence() {
        let meta = map(&[
            ("Timestamp", s("not a number")),
            ("TraceId", s("0123456789abcdef0123456789abcdeg")),
            (
                "SpanId",
                Value::Bin(Arc::from(&[1u8, 2, 3, 4, 5, 6, 7, 8][..])),
            ),
            ("TraceFlags", Value::UInt(1)),
            ("Attributes", Value::Map(map(&[("a", Value::Nil)]))),
        ]);
        let body = map(&[
            ("message", s("hi\0there")),
            ("SeverityText", s("ERROR")),
            ("SeverityNumber", Value::UInt(17)),
            ("TraceId", s("000102030405060708090a0b0c0d0e0f")),
        ]);
        let rec = Record {
            time: EventTime { secs: 9, nanos: 0 },
            metadata: meta,
            body,
        };
        let (logs, skipped) = encode(mapping(&["$log", "$message"], false), &[rec]);
        let l = &logs[0];
        assert_eq!(
            l.time_unix_nano, 0,
            "a Timestamp that is not a positive integer"
        );
        assert_eq!(l.body, str_any("hi"), "cut at NUL, as strndup");
        assert_eq!((l.severity_number, l.severity_text.as_str()), (17, "ERROR"));
        assert_eq!(l.trace_id, (0u8..16).collect::<Vec<_>>(), "from the record");
        assert_eq!(l.span_id, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(l.flags, 1);
        assert_eq!(
            skipped,
            Skipped {
                trace_id: 1,
                span_id: 0
            }
        );
        // Metadata entries, then the Attributes map's (null: a value with nothing set).
        assert_eq!(l.attributes.len(), 6);
        assert_eq!(l.attributes[5].key, "a");
        assert_eq!(l.attributes[5].value, Some(AnyValue { value: None }));
    }

    #[test]
    fn whole_record_with_every_value_type() {
        let body = map(&[
            ("u", Value::UInt(u64::MAX)),
            ("f", Value::Float(2.5)),
            ("b", Value::Bin(Arc::from(&b"\x00\xff"[..]))),
            (
                "a",
                Value::Array(vec![
                    Value::Bool(true),
                    Value::Array(vec![]),
                    Value::Map(vec![]),
                ]),
            ),
            ("", s("empty key")),
        ]);
        let rec = Record::new(EventTime { secs: 1, nanos: 0 }, body);
        let (logs, _) = encode(mapping(&["$log"], false), &[rec.clone(), rec]);
        assert_eq!(logs.len(), 2);
        let Some(Any::KvList(kv)) = logs[0].body.clone().unwrap().value else {
            panic!()
        };
        let v: Vec<_> = kv
            .values
            .iter()
            .map(|e| e.value.clone().unwrap().value.unwrap())
            .collect();
        assert_eq!(v[0], Any::Int(-1));
        assert_eq!(v[1], Any::Double(2.5));
        assert_eq!(v[2], Any::Bytes(vec![0, 255]));
        let Any::Array(a) = &v[3] else { panic!() };
        assert_eq!(a.values[1].value, Some(Any::Array(List { values: vec![] })));
        assert_eq!(
            a.values[2].value,
            Some(Any::KvList(KvList { values: vec![] }))
        );
        assert_eq!(kv.values[4].key, "");
    }
}
