//! The Bulk API body of one flush, byte for byte as Fluent Bit's `elasticsearch_format`
//! writes it: per record an action line (`{"create":{"_index":"...","_type":"_doc"}}`)
//! then the document (the time key, the tag key, the record's keys, dots replaced on
//! request; for `update`/`upsert` wrapped in `{"doc":...}`), each ending with `\n`.
//! Fluent Bit: plugins/out_es/es.c (elasticsearch_format, compose_index_header,
//! es_pack_map_content), es_bulk.h (the line formats)
//!
//! Quirks kept, because users' indices depend on them: `index` goes through strftime
//! (with the flush's time) only when neither `generate_id` nor `id_key` gives the
//! record an id; otherwise it is written as given unless `current_time_index` is on.
//! Action line values (index, type, id) are written without JSON escaping, which is why
//! an id or a `logstash_prefix_key` value with quotes, backslashes or control
//! characters is not used (Fluent Bit's `es_action_line_value_is_safe`).
//!
//! Duplicate keys in a document (a record's own `@timestamp`, or two keys that are
//! the same once dots are replaced) are written once, the last one winning, as
//! Fluent Bit's msgpack-to-JSON conversion does. The `generate_id` hash is taken of the
//! MessagePack document before that, as Fluent Bit takes it.

use std::ffi::CStr;

use rmp::encode;

use super::murmur3;
use crate::event::accessor::Accessor;
use crate::event::format::{
    write_json_str, write_json_value, write_map_entries, write_msgpack_value,
};
use crate::event::template::Template;
use crate::event::{EventTime, Map, Record, Value};

/// `write_operation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Create,
    Index,
    Update,
    Upsert,
}

impl WriteOp {
    pub fn parse(s: &str) -> Option<WriteOp> {
        Some(match s.to_ascii_lowercase().as_str() {
            "create" => WriteOp::Create,
            "index" => WriteOp::Index,
            "update" => WriteOp::Update,
            "upsert" => WriteOp::Upsert,
            _ => return None,
        })
    }
    /// The bulk action: `upsert` is an `update` with `doc_as_upsert`.
    pub fn action(self) -> &'static str {
        match self {
            WriteOp::Create => "create",
            WriteOp::Index => "index",
            WriteOp::Update | WriteOp::Upsert => "update",
        }
    }
}

/// How `generate_id` makes an id of a document: `es` hashes it with MurmurHash3
/// (lower-case words), `opensearch` with XXH3-128 (upper-case bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdHash {
    Murmur3,
    Xxh3,
}

impl IdHash {
    fn uuid(self, doc: &[u8], out: &mut [u8; 36]) {
        match self {
            IdHash::Murmur3 => murmur3::es_uuid(doc, out),
            IdHash::Xxh3 => {
                // cfl_hash_128bits' struct {low64, high64} as its bytes in memory, each
                // as %02X, grouped 4-2-2-2-6.
                let h = xxhash_rust::xxh3::xxh3_128(doc);
                let (lo, hi) = (h as u64, (h >> 64) as u64);
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&lo.to_le_bytes());
                bytes[8..].copy_from_slice(&hi.to_le_bytes());
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                let mut pos = 0;
                for (i, b) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        out[pos] = b'-';
                        pos += 1;
                    }
                    out[pos] = HEX[usize::from(b >> 4)];
                    out[pos + 1] = HEX[usize::from(b & 0xf)];
                    pos += 2;
                }
            }
        }
    }
}

/// How documents are written: the output's properties, parsed.
#[derive(Clone, Debug)]
pub struct BulkConf {
    pub index: std::ffi::CString,
    /// `opensearch`: an `index` with `$` is a record accessor pattern, rendered per
    /// record (an unsafe result falls back to `index` as written).
    pub index_ra: Option<Template>,
    pub id_hash: IdHash,
    /// `None` with `suppress_type_name on`.
    pub type_name: Option<String>,
    pub logstash_format: bool,
    pub logstash_prefix: String,
    pub logstash_prefix_separator: String,
    pub logstash_dateformat: std::ffi::CString,
    pub prefix_key: Option<Template>,
    pub time_key: String,
    pub time_key_format: std::ffi::CString,
    pub time_key_nanos: bool,
    /// `include_tag_key`: the key for the tag.
    pub tag_key: Option<String>,
    pub generate_id: bool,
    pub id_key: Option<Accessor>,
    pub write_op: WriteOp,
    pub replace_dots: bool,
    pub current_time_index: bool,
    pub escape_unicode: bool,
}

/// One flush's body and which record each of its documents is.
#[derive(Default)]
pub struct Bulk {
    pub body: Vec<u8>,
    /// For each document, in order, its record's position in the chunk.
    pub sent: Vec<usize>,
    /// Records left out: `update`/`upsert` without a usable `id_key` value.
    pub skipped: u64,
    /// The action line (Fluent Bit's `j_index`).
    line: Vec<u8>,
    /// The MessagePack document `generate_id` hashes.
    pack: Vec<u8>,
}

/// Fluent Bit's `es_action_line_value_is_safe`.
pub fn line_safe(v: &[u8]) -> bool {
    !v.iter()
        .any(|&c| c == b'\n' || c == b'\r' || c == b'"' || c == b'\\' || c < 0x20)
}

fn gmtime(secs: i64) -> libc::tm {
    let t = secs as libc::time_t;
    // SAFETY: gmtime_r fills the zeroed `tm` it is given and keeps no pointer to it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::gmtime_r(&t, &mut tm) };
    tm
}

/// C's `strftime` into `buf` (at most `buf.len()` bytes with the NUL): the bytes
/// written, 0 when the result does not fit (or is empty).
fn strftime(buf: &mut [u8], fmt: &CStr, tm: &libc::tm) -> usize {
    if buf.is_empty() {
        return 0;
    }
    // SAFETY: `buf` is writable for its length, `fmt` is NUL-terminated, `tm` is valid.
    unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), tm) }
}

/// `{"ACTION":{"_index":"INDEX"[,"_type":"TYPE"][,"_id":"ID"]}}\n`, values as they are.
fn action_line(
    out: &mut Vec<u8>,
    action: &str,
    index: &[u8],
    type_name: Option<&str>,
    id: Option<&[u8]>,
) {
    out.clear();
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(action.as_bytes());
    out.extend_from_slice(b"\":{\"_index\":\"");
    out.extend_from_slice(index);
    if let Some(t) = type_name {
        out.extend_from_slice(b"\",\"_type\":\"");
        out.extend_from_slice(t.as_bytes());
    }
    if let Some(id) = id {
        out.extend_from_slice(b"\",\"_id\":\"");
        out.extend_from_slice(id);
    }
    out.extend_from_slice(b"\"}}\n");
}

/// `compose_index_header`: `prefix` (or the record's custom prefix), the separator and
/// the date, in Fluent Bit's 256-byte buffer; `None` when they do not fit.
fn logstash_index(
    buf: &mut [u8; 256],
    prefix: &[u8],
    separator: &[u8],
    dateformat: &CStr,
    tm: &libc::tm,
) -> Option<usize> {
    let mut len = prefix.len().min(255);
    buf[..len].copy_from_slice(&prefix[..len]);
    // snprintf(p, size - len, "%s", separator) fails when it would not fit.
    if separator.len() > 256 - len {
        return None;
    }
    let room = 256 - len - 1;
    let n = separator.len().min(room);
    buf[len..len + n].copy_from_slice(&separator[..n]);
    len += separator.len();
    if len >= 256 {
        return None;
    }
    let s = strftime(&mut buf[len..], dateformat, tm);
    if s == 0 {
        return None;
    }
    Some(len + s)
}

/// A record key equal to `synth` once its dots are replaced (when they are).
fn rec_key_is(k: &str, synth: &str, dots: bool) -> bool {
    k.len() == synth.len()
        && k.bytes()
            .zip(synth.bytes())
            .all(|(a, b)| (if dots && a == b'.' { b'_' } else { a }) == b)
}

/// Two record keys equal once both have their dots replaced.
fn keys_eq_dots(a: &str, b: &str) -> bool {
    let d = |c: u8| if c == b'.' { b'_' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| d(x) == d(y))
}

/// A JSON string for key `k` with its dots replaced (escaping never writes a `.`, so
/// the dots in the written text are the key's).
fn write_key_dots(out: &mut Vec<u8>, k: &str, esc: bool) {
    let start = out.len();
    write_json_str(out, k.as_bytes(), esc);
    out[start..]
        .iter_mut()
        .filter(|b| **b == b'.')
        .for_each(|b| *b = b'_');
}

/// `"k":v` pairs of a map with dots replaced at every depth, the last of equal keys
/// winning.
fn write_entries_dots(out: &mut Vec<u8>, m: &Map, first: &mut bool, esc: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if m[i + 1..].iter().any(|(k2, _)| keys_eq_dots(k, k2)) {
            continue;
        }
        if !*first {
            out.push(b',');
        }
        *first = false;
        write_key_dots(out, k, esc);
        out.push(b':');
        write_value_dots(out, v, esc);
    }
}

fn write_value_dots(out: &mut Vec<u8>, v: &Value, esc: bool) {
    match v {
        Value::Map(m) => {
            out.push(b'{');
            let mut first = true;
            write_entries_dots(out, m, &mut first, esc);
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_dots(out, item, esc);
            }
            out.push(b']');
        }
        other => write_json_value(out, other, esc),
    }
}

/// A string in MessagePack with its dots replaced.
fn pack_key(out: &mut Vec<u8>, k: &str, dots: bool) {
    let _ = encode::write_str_len(out, k.len() as u32);
    let start = out.len();
    out.extend_from_slice(k.as_bytes());
    if dots {
        out[start..]
            .iter_mut()
            .filter(|b| **b == b'.')
            .for_each(|b| *b = b'_');
    }
}

/// `es_pack_map_content` / `es_pack_array_content` for one value.
fn pack_value(out: &mut Vec<u8>, v: &Value, dots: bool) {
    match v {
        Value::Map(m) if dots => {
            let _ = encode::write_map_len(out, m.len() as u32);
            for (k, v) in m {
                pack_key(out, k, dots);
                pack_value(out, v, dots);
            }
        }
        Value::Array(a) if dots => {
            let _ = encode::write_array_len(out, a.len() as u32);
            for item in a {
                pack_value(out, item, dots);
            }
        }
        other => write_msgpack_value(out, other),
    }
}

fn pack_str(out: &mut Vec<u8>, s: &[u8]) {
    let _ = encode::write_str_len(out, s.len() as u32);
    out.extend_from_slice(s);
}

impl BulkConf {
    /// The document as Fluent Bit packs it before converting it to JSON.
    fn pack_doc(&self, out: &mut Vec<u8>, tag: &str, time: &[u8], body: &Map) {
        out.clear();
        let size = body.len() + 1 + usize::from(self.tag_key.is_some());
        let _ = encode::write_map_len(out, size as u32);
        pack_str(out, self.time_key.as_bytes());
        pack_str(out, time);
        if let Some(tk) = &self.tag_key {
            pack_str(out, tk.as_bytes());
            pack_str(out, tag.as_bytes());
        }
        for (k, v) in body {
            pack_key(out, k, self.replace_dots);
            pack_value(out, v, self.replace_dots);
        }
    }

    /// The document as JSON: the time key, the tag key, the record.
    fn write_doc(&self, out: &mut Vec<u8>, tag: &str, time: &[u8], body: &Map) {
        let (esc, dots) = (self.escape_unicode, self.replace_dots);
        out.push(b'{');
        let mut first = true;
        let tag_shadows_time = self.tag_key.as_deref() == Some(self.time_key.as_str());
        if !tag_shadows_time
            && !body
                .iter()
                .any(|(k, _)| rec_key_is(k, &self.time_key, dots))
        {
            write_json_str(out, self.time_key.as_bytes(), esc);
            out.push(b':');
            write_json_str(out, time, esc);
            first = false;
        }
        if let Some(tk) = &self.tag_key {
            if !body.iter().any(|(k, _)| rec_key_is(k, tk, dots)) {
                if !first {
                    out.push(b',');
                }
                write_json_str(out, tk.as_bytes(), esc);
                out.push(b':');
                write_json_str(out, tag.as_bytes(), esc);
                first = false;
            }
        }
        if dots {
            write_entries_dots(out, body, &mut first, esc);
        } else {
            write_map_entries(out, body, &mut first, esc);
        }
        out.push(b'}');
    }

    /// Formats `records` into `bulk` (cleared first). `now` is the flush's time (the
    /// index's date, and every date with `current_time_index`).
    pub fn format(&self, tag: &str, records: &[Record], now: EventTime, bulk: &mut Bulk) {
        bulk.body.clear();
        bulk.sent.clear();
        bulk.skipped = 0;
        let action = self.write_op.action();
        let type_name = self.type_name.as_deref();
        let id_required = self.id_key.is_some()
            && !self.generate_id
            && matches!(self.write_op, WriteOp::Update | WriteOp::Upsert);
        let index = self.index.as_bytes();
        let mut index_now = [0u8; 256];
        if !self.logstash_format && !self.generate_id && self.index_ra.is_none() {
            let n = strftime(&mut index_now[..255], &self.index, &gmtime(now.secs));
            action_line(&mut bulk.line, action, &index_now[..n], type_name, None);
        }
        let mut ls_buf = [0u8; 256];
        let mut index_rec = [0u8; 256];
        let mut time_buf = [0u8; 256];
        let mut uuid = [0u8; 36];
        for (i, rec) in records.iter().enumerate() {
            let t = if self.current_time_index {
                now
            } else {
                rec.time
            };
            let tm = gmtime(t.secs);
            // @timestamp: strftime, then milliseconds or nanoseconds and `Z`.
            let mut s = strftime(&mut time_buf[..255], &self.time_key_format, &tm);
            {
                use std::io::Write;
                let mut w = &mut time_buf[s..255];
                let before = w.len();
                let _ = if self.time_key_nanos {
                    write!(w, ".{:09}Z", t.nanos)
                } else {
                    write!(w, ".{:03}Z", t.nanos / 1_000_000)
                };
                s += before - w.len();
            }
            let time = &time_buf[..s];

            let ra_index: String;
            let mut es_index: &[u8] = index;
            if self.logstash_format {
                let custom = self.prefix_key.as_ref().and_then(|tpl| {
                    let v = tpl.render(tag, &rec.body, "", &[]);
                    (!v.is_empty() && line_safe(v.as_bytes())).then_some(v)
                });
                let prefix = match &custom {
                    Some(v) => &v.as_bytes()[..v.len().min(128)],
                    None => self.logstash_prefix.as_bytes(),
                };
                let n = logstash_index(
                    &mut ls_buf,
                    prefix,
                    self.logstash_prefix_separator.as_bytes(),
                    &self.logstash_dateformat,
                    &tm,
                )
                .or_else(|| {
                    logstash_index(&mut ls_buf, prefix, b"-", &self.logstash_dateformat, &tm)
                })
                .unwrap_or(0);
                es_index = &ls_buf[..n];
                if !self.generate_id {
                    action_line(&mut bulk.line, action, es_index, type_name, None);
                }
            } else if self.current_time_index {
                let n = strftime(&mut index_rec[..255], &self.index, &tm);
                es_index = &index_rec[..n];
            } else if let Some(tpl) = &self.index_ra {
                ra_index = tpl.render(tag, &rec.body, "", &[]);
                if line_safe(ra_index.as_bytes()) {
                    es_index = ra_index.as_bytes();
                }
                action_line(&mut bulk.line, action, es_index, type_name, None);
            }

            if self.generate_id {
                self.pack_doc(&mut bulk.pack, tag, time, &rec.body);
                self.id_hash.uuid(&bulk.pack, &mut uuid);
                action_line(&mut bulk.line, action, es_index, type_name, Some(&uuid));
            }
            if let Some(idk) = &self.id_key {
                let id = match idk.ra_value(&rec.body) {
                    Some(Value::Str(s)) => Some(s.as_bytes()),
                    _ => None,
                };
                match id {
                    Some(id) if line_safe(id) => {
                        action_line(&mut bulk.line, action, es_index, type_name, Some(id))
                    }
                    _ if id_required => {
                        bulk.skipped += 1;
                        continue;
                    }
                    Some(_) if !self.generate_id => {
                        action_line(&mut bulk.line, action, es_index, type_name, None)
                    }
                    _ => {}
                }
            }

            bulk.body.extend_from_slice(&bulk.line);
            match self.write_op {
                WriteOp::Update => bulk.body.extend_from_slice(b"{\"doc\":"),
                WriteOp::Upsert => bulk
                    .body
                    .extend_from_slice(b"{\"doc_as_upsert\":true,\"doc\":"),
                _ => {}
            }
            self.write_doc(&mut bulk.body, tag, time, &rec.body);
            if matches!(self.write_op, WriteOp::Update | WriteOp::Upsert) {
                bulk.body.push(b'}');
            }
            bulk.body.push(b'\n');
            bulk.sent.push(i);
        }
    }
}
