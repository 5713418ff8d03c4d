//! tail's two older ways of joining lines, kept because configurations still use them.
//!
//! - `multiline on` + `parser_firstline` + `parser_N` + `multiline_flush`
//!   (tail_multiline.c): a line the first-line parser reads starts a record (its map);
//!   a line a `parser_N` reads adds its map's keys; any other line is appended, after a
//!   `\n`, to the record's last value when that is a string, else goes out alone as
//!   `{key: line}`. The record is every map's keys in order, each map's last string
//!   followed by the raw lines that came after it; its time is the first line's.
//! - `docker_mode` + `docker_mode_flush` + `docker_mode_parser` (tail_dockermode.c):
//!   works on the raw JSON text. The escaped `log` strings of partial lines (not ending
//!   with `\n`) are concatenated and put into the last line's JSON, which goes out as
//!   `{key: json_text}` for the caller's `parser`. With `docker_mode_parser`, complete
//!   lines are joined too until a line (the whole raw JSON line) matches that parser.
//!
//! Timers: Fluent Bit checks every `multiline_flush`/`docker_mode_flush` seconds for
//! records older than that (by whole seconds); here a record goes out `flush` after its
//! first line (multiline) or after its last line (docker_mode, whose timeout each line
//! renews).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::container::{bytes_value, docker_mode_log, escaped_ends_with_newline};
use super::engine::At;
use super::MlRecord;
use crate::event::{EventTime, Map, Str, Value};
use crate::parser::Parser;

/// `multiline on`.
#[derive(Debug)]
pub struct Firstline {
    firstline: Arc<Parser>,
    parsers: Vec<Arc<Parser>>,
    flush: Duration,
    key: Str,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    items: Vec<Item>,
    /// The first line's last value is a string: raw lines may be appended.
    append_raw: bool,
    time: EventTime,
    /// Keys of every map (`mult_keys`): a record without any is never emitted.
    keys: usize,
    since: Instant,
    span: (u64, u64),
}

#[derive(Debug)]
enum Item {
    Map(Map),
    Raw(Box<[u8]>),
}

fn is_string(v: &Value) -> bool {
    matches!(v, Value::Str(_) | Value::Bin(_))
}

impl Firstline {
    pub fn new(
        firstline: Arc<Parser>,
        parsers: Vec<Arc<Parser>>,
        flush: Duration,
        key: Str,
    ) -> Firstline {
        Firstline {
            firstline,
            parsers,
            flush,
            key,
            pending: None,
        }
    }

    pub fn period(&self) -> Duration {
        self.flush
    }

    pub fn append(&mut self, line: &[u8], time: EventTime, at: At, out: &mut Vec<MlRecord>) {
        let mut map = Map::new();
        if let Ok(t) = self.firstline.parse(line, &mut map) {
            self.flush(out);
            let append_raw = map.last().is_some_and(|(_, v)| is_string(v));
            self.pending = Some(Pending {
                keys: map.len(),
                items: vec![Item::Map(map)],
                append_raw,
                time: t.filter(|t| *t != EventTime::default()).unwrap_or(time),
                since: at.now,
                span: (at.first, at.end),
            });
            return;
        }
        for parser in &self.parsers {
            let mut map = Map::new();
            if parser.parse(line, &mut map).is_ok() {
                // Without a first line, Fluent Bit buffers this where it is never
                // flushed: the line is lost.
                if let Some(p) = &mut self.pending {
                    p.keys += map.len();
                    p.items.push(Item::Map(map));
                    p.span.1 = at.end;
                }
                return;
            }
        }
        match &mut self.pending {
            Some(p) if p.append_raw => {
                p.items.push(Item::Raw(Box::from(line)));
                p.span.1 = at.end;
            }
            _ => out.push(MlRecord::new(
                time,
                vec![(self.key.clone(), bytes_value(line))],
                at.first,
                at.end,
            )),
        }
    }

    /// `flb_tail_mult_flush` + `flb_tail_mult_pack_line_body`.
    pub fn flush(&mut self, out: &mut Vec<MlRecord>) {
        let Some(p) = self.pending.take() else { return };
        if p.keys == 0 {
            return;
        }
        let mut body = Map::with_capacity(p.keys);
        let mut items = p.items.into_iter().peekable();
        while let Some(item) = items.next() {
            let Item::Map(map) = item else { continue };
            let n = map.len();
            for (j, (k, v)) in map.into_iter().enumerate() {
                if j + 1 < n || !is_string(&v) || !matches!(items.peek(), Some(Item::Raw(_))) {
                    body.push((k, v));
                    continue;
                }
                let mut text = match &v {
                    Value::Str(s) => s.as_bytes().to_vec(),
                    Value::Bin(b) => b.to_vec(),
                    _ => unreachable!("checked by is_string"),
                };
                while let Some(Item::Raw(raw)) = items.next_if(|i| matches!(i, Item::Raw(_))) {
                    text.push(b'\n');
                    text.extend_from_slice(&raw);
                }
                body.push((k, bytes_value(&text)));
            }
        }
        let (first, end) = p.span;
        out.push(MlRecord::new(p.time, body, first, end));
    }

    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<MlRecord>) {
        if self.deadline().is_some_and(|d| now >= d) {
            self.flush(out);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.since + self.flush)
    }

    pub fn pending_from(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.span.0)
    }
}

/// `docker_mode`.
#[derive(Debug)]
pub struct DockerMode {
    flush: Duration,
    firstline: Option<Arc<Parser>>,
    key: Str,
    /// The escaped `log` texts joined so far (`dmode_buf`).
    buf: Vec<u8>,
    /// The last JSON line (`dmode_lastline`) and where its `log` text is.
    last: Vec<u8>,
    last_log: (usize, usize),
    /// The last line's `log` ended with a newline.
    complete: bool,
    /// A line matched `docker_mode_parser` once (`dmode_firstline`, never reset).
    seen_first: bool,
    last_at: Option<Instant>,
    time: EventTime,
    span: Option<(u64, u64)>,
}

impl DockerMode {
    pub fn new(flush: Duration, firstline: Option<Arc<Parser>>, key: Str) -> DockerMode {
        DockerMode {
            flush,
            firstline,
            key,
            buf: Vec::new(),
            last: Vec::new(),
            last_log: (0, 0),
            complete: false,
            seen_first: false,
            last_at: None,
            time: EventTime::default(),
            span: None,
        }
    }

    pub fn period(&self) -> Duration {
        self.flush
    }

    /// `flb_tail_dmode_process_content`, and tail's fallback for other lines.
    pub fn append(&mut self, line: &[u8], time: EventTime, at: At, out: &mut Vec<MlRecord>) {
        if let Some(parser) = &self.firstline {
            let matched = parser.parse(line, &mut Map::new()).is_ok();
            self.seen_first |= matched;
            if !self.last.is_empty() && self.complete && (matched || !self.seen_first) {
                self.flush(out);
            }
        }
        let Some((a, z)) = docker_mode_log(line) else {
            self.flush(out);
            let body = vec![(self.key.clone(), bytes_value(line))];
            out.push(MlRecord::new(time, body, at.first, at.end));
            return;
        };
        self.buf.extend_from_slice(&line[a..z]);
        self.last.clear();
        self.last.extend_from_slice(line);
        self.last_log = (a, z);
        self.last_at = Some(at.now);
        self.time = time;
        self.span = Some((self.span.map_or(at.first, |s| s.0), at.end));
        self.complete = escaped_ends_with_newline(&line[a..z]);
        if self.complete && self.firstline.is_none() {
            self.flush(out);
        }
    }

    /// `flb_tail_dmode_flush`: the last line with the joined `log`.
    pub fn flush(&mut self, out: &mut Vec<MlRecord>) {
        if self.last.is_empty() {
            return;
        }
        let (a, z) = self.last_log;
        let text = if self.buf.len() == z - a {
            // One line: it is its own result.
            bytes_value(&self.last)
        } else {
            let mut joined = Vec::with_capacity(self.last.len() + self.buf.len());
            joined.extend_from_slice(&self.last[..a]);
            joined.extend_from_slice(&self.buf);
            joined.extend_from_slice(&self.last[z..]);
            bytes_value(&joined)
        };
        let (first, end) = self.span.take().unwrap_or_default();
        out.push(MlRecord::new(
            self.time,
            vec![(self.key.clone(), text)],
            first,
            end,
        ));
        self.buf.clear();
        self.last.clear();
        self.last_at = None;
    }

    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<MlRecord>) {
        if self.deadline().is_some_and(|d| now >= d) {
            self.flush(out);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.last_at
            .filter(|_| !self.last.is_empty())
            .map(|t| t + self.flush)
    }

    pub fn pending_from(&self) -> Option<u64> {
        self.span.filter(|_| !self.last.is_empty()).map(|s| s.0)
    }
}
