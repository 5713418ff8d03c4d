//! The multiline engine of one stream: Fluent Bit's `flb_ml_append_text` /
//! `flb_ml_append_object`, stream groups and flushes, step for step, so joined records
//! come out with the same keys, order, separators and times.
//!
//! What Fluent Bit does, and so this does:
//! - Parsers are tried in order, the one that took the stream's previous line first.
//!   A parser takes a line when its line parser (if any) reads it, `key_content` is a
//!   string in the result, and its rules (regex: a continuation of the current state or
//!   a start state; endswith/equal: any line long enough) accept it.
//! - A line no parser takes flushes everything held by every parser, then goes out
//!   alone through the first parser: text as `{key_content|"log": line}`, a record
//!   unchanged.
//! - Each parser keeps one group per `key_group` value (Docker/CRI: `stdout`, `stderr`).
//!   Text is joined into the group's buffer: regex rules put `\n` between lines,
//!   endswith/equal do only without `key_content`. Without `key_content` a flushed text
//!   always ends with `\n`.
//! - A record is the first line's map (when lines are parsed into maps) with its first
//!   `key_content` key replaced by the joined text, else `{key_content|"log": text}`.
//!   Its time is the time registered last: for maps the first line's, for text the
//!   last line's (before the one that completed it, for regex rules).
//! - Quirks kept: a map-mode regex record completed by a rule whose next state is a
//!   start state leaves the completing line's map registered, so the next record takes
//!   its keys and, if none follows, it goes out again at the next flush; a time Fluent
//!   Bit cannot encode (before 1970) drops the record but keeps its text, which joins
//!   the next record; a state survives a flush, so a continuation line after a timeout
//!   starts a record of its own.
//! - Held records go out on a timer of period `flush_timeout` (the largest of the
//!   parsers), not when each record gets old: a record pending when the timer fires is
//!   flushed even if its last line just arrived.
//!
//! Fluent Bit: src/multiline/flb_ml.c, flb_ml_rule.c, flb_ml_stream.c, flb_ml_group.c

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::container::{bytes_value, parse_cri, parse_docker, value_bytes, words};
use super::{Kind, LineParser, MlParser, MlRecord, DEFAULT_BUFFER_LIMIT};
use crate::event::{EventTime, Map, Str, Value};

/// Fluent Bit's `FLB_ML_MAX_GROUPS`: groups per parser and stream.
const MAX_GROUPS: usize = 6;

/// Where a line is (`first`, `end`) and when it arrived.
#[derive(Clone, Copy, Debug)]
pub struct At {
    pub first: u64,
    pub end: u64,
    pub now: Instant,
}

/// What is appended: a line of text (tail) or a record (the multiline filter).
pub enum Input<'a> {
    Text(&'a [u8]),
    Record { body: Map, metadata: Map },
}

#[derive(Debug)]
pub struct Engine {
    insts: Vec<Inst>,
    /// The parser that took the previous line, tried first.
    lru: Option<usize>,
    period: Duration,
    /// The timer's phase: the first append.
    anchor: Option<Instant>,
    /// Since when something has been held without a break.
    pending_since: Option<Instant>,
    limit: usize,
    scratch: Vec<u8>,
}

/// A parser instance on this stream (`flb_ml_parser_ins` + its `flb_ml_stream`).
#[derive(Debug)]
struct Inst {
    parser: Arc<MlParser>,
    key_content: Option<Str>,
    groups: Vec<Group>,
}

/// `flb_ml_stream_group`: what is held for one `key_group` value.
#[derive(Debug)]
struct Group {
    name: Box<[u8]>,
    buf: Vec<u8>,
    /// The first line's map (`mp_sbuf`).
    context: Option<Map>,
    /// The time registered last (`mp_time`).
    time: EventTime,
    /// The rule the last line matched (`rule_to_state`); kept across flushes.
    rule: Option<usize>,
    truncated: bool,
    /// `first` of the first line held and `end` of the last.
    span: Option<(u64, u64)>,
    /// The metadata of each record added since the last flush.
    metadata: Vec<Map>,
}

impl Group {
    fn new(name: &[u8]) -> Group {
        Group {
            name: Box::from(name),
            buf: Vec::new(),
            context: None,
            time: EventTime::default(),
            rule: None,
            truncated: false,
            span: None,
            metadata: Vec::new(),
        }
    }

    /// `flb_ml_stream_group_add_metadata`: a snapshot, binary values as hex strings.
    fn add_metadata(&mut self, metadata: &Map) {
        if !metadata.is_empty() {
            self.metadata.push(
                metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), hex_bins(v)))
                    .collect(),
            );
        }
    }

    /// `flb_ml_flush_metadata_buffer`: every key/value once, then the truncation mark.
    fn take_metadata(&mut self) -> Map {
        let mut md = Map::new();
        for (k, v) in self.metadata.drain(..).flatten() {
            if !md.iter().any(|(k2, v2)| *k2 == k && *v2 == v) {
                md.push((k, v));
            }
        }
        if self.truncated {
            md.push((Arc::from("multiline_truncated"), Value::Bool(true)));
        }
        md
    }

    fn touch(&mut self, at: At) {
        self.span = Some((self.span.map_or(at.first, |s| s.0), at.end));
    }

    /// `flb_ml_group_cat`: appends up to the limit; true when cut.
    fn cat(&mut self, data: &[u8], limit: usize) -> bool {
        let mut data = data;
        let mut cut = false;
        if limit > 0 {
            if self.buf.len() >= limit {
                self.truncated = true;
                return true;
            }
            let avail = limit - self.buf.len();
            if data.len() > avail {
                data = &data[..avail];
                self.truncated = true;
                cut = true;
            }
        }
        self.buf.extend_from_slice(data);
        cut
    }

    /// `breakline_prepare`: without `key_content`, text ends with a newline.
    fn breakline(&mut self, key_content: &Option<Str>) {
        if key_content.is_none() && self.buf.last().is_some_and(|&b| b != b'\n') {
            self.buf.push(b'\n');
        }
    }

    /// `flb_ml_flush_stream_group`.
    fn flush(&mut self, key_content: &Option<Str>, out: &mut Vec<MlRecord>) {
        self.breakline(key_content);
        let body = match self.context.take() {
            Some(mut map) => {
                if !self.buf.is_empty() {
                    if let Some(kc) = key_content {
                        if let Some(slot) = map.iter_mut().find(|(k, _)| **k == **kc) {
                            slot.1 = bytes_value(&self.buf);
                        }
                    }
                }
                Some(map)
            }
            None if !self.buf.is_empty() => {
                Some(vec![(content_key(key_content), bytes_value(&self.buf))])
            }
            None => None,
        };
        if let Some(body) = body {
            if !encodable(self.time) {
                // The encoder refuses the time: the record is lost but its text stays.
                crate::error!("[multiline] error packing event");
                self.metadata.clear();
                return;
            }
            let (first, end) = self.span.unwrap_or_default();
            out.push(MlRecord {
                time: self.time,
                body,
                first,
                end,
                metadata: self.take_metadata(),
                truncated: self.truncated,
            });
        }
        self.metadata.clear();
        self.buf.clear();
        self.truncated = false;
        self.span = None;
    }

    fn held(&self) -> bool {
        !self.buf.is_empty() || self.context.is_some()
    }
}

/// Metadata as Fluent Bit copies it: binary values become lower-case hex strings.
fn hex_bins(v: &Value) -> Value {
    match v {
        Value::Bin(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::Str(Arc::from(hex))
        }
        Value::Array(a) => Value::Array(a.iter().map(hex_bins).collect()),
        Value::Map(m) => Value::Map(m.iter().map(|(k, v)| (k.clone(), hex_bins(v))).collect()),
        other => other.clone(),
    }
}

/// The key of a record made of text only.
fn content_key(key_content: &Option<Str>) -> Str {
    key_content.clone().unwrap_or_else(|| words().log.clone())
}

/// `flb_time_is_valid_eventtime`.
fn encodable(t: EventTime) -> bool {
    (0..=i64::from(u32::MAX)).contains(&t.secs) && t.nanos < 1_000_000_000
}

/// Where the map of a line is.
enum Src {
    /// Text without a line parser.
    None,
    /// The line parser's result.
    Parsed(Map),
    /// The appended record itself.
    Input,
}

/// A string taken from the line or its map.
enum Content {
    Line,
    Str(Arc<str>),
    Bin(Arc<[u8]>),
}

impl Content {
    fn of(v: &Value) -> Option<Content> {
        match v {
            Value::Str(s) => Some(Content::Str(s.clone())),
            Value::Bin(b) => Some(Content::Bin(b.clone())),
            _ => None,
        }
    }

    fn bytes<'a>(&'a self, line: &'a [u8]) -> &'a [u8] {
        match self {
            Content::Line => line,
            Content::Str(s) => s.as_bytes(),
            Content::Bin(b) => b,
        }
    }
}

/// What taking a line will do.
enum Decision {
    /// Regex: continues the current state with this rule.
    Cont(usize),
    /// Regex: starts a record with this rule.
    Start(usize),
    /// Endswith/equal: joined; `true` completes the record.
    Join(bool),
    /// Endswith on text shorter than `match_string`: taken, and dropped.
    Swallow,
}

/// A line a parser takes, read but not yet applied.
struct Prepared {
    src: Src,
    time: EventTime,
    content: Content,
    /// The first `key_content` key holds the content (so a one-line record is the map).
    first_key_holds: bool,
    group: Option<Content>,
    decision: Decision,
}

impl Inst {
    /// The group a `key_group` value selects, if it exists yet.
    fn group_index(&self, name: Option<&[u8]>) -> Option<usize> {
        match (self.parser.key_group.is_some(), name) {
            (true, Some(n)) => self.groups.iter().position(|g| &*g.name == n),
            _ => Some(0),
        }
    }

    fn group_or_create(&mut self, name: Option<&[u8]>) -> usize {
        if let Some(i) = self.group_index(name) {
            return i;
        }
        if self.groups.len() >= MAX_GROUPS {
            // Fluent Bit fails here ("exceeded number of allowed groups"); keep the
            // line in the default group rather than lose it.
            return 0;
        }
        self.groups.push(Group::new(name.unwrap_or_default()));
        self.groups.len() - 1
    }

    /// Whether this parser takes the line, and how (no state changes).
    fn prepare(
        &self,
        input: &Input<'_>,
        time: EventTime,
        scratch: &mut Vec<u8>,
    ) -> Option<Prepared> {
        let p = &*self.parser;
        let (src, time) = match (input, &p.line) {
            (Input::Text(_), LineParser::None) => (Src::None, time),
            (Input::Text(line), lp) => {
                let (map, t) = run_line_parser(lp, line, scratch)?;
                (
                    Src::Parsed(map),
                    t.filter(|t| *t != EventTime::default()).unwrap_or(time),
                )
            }
            (Input::Record { .. }, LineParser::None) => (Src::Input, time),
            (Input::Record { body: rec, .. }, lp) => {
                let kc = self.key_content.as_ref()?;
                let (_, v) = rec.iter().find(|(k, _)| **k == **kc)?;
                let (map, t) = run_line_parser(lp, value_bytes(v)?, scratch)?;
                (
                    Src::Parsed(map),
                    t.filter(|t| *t != EventTime::default()).unwrap_or(time),
                )
            }
        };
        let (line, map): (&[u8], Option<&Map>) = match (&src, input) {
            (Src::None, Input::Text(line)) => (line, None),
            (Src::Parsed(map), _) => (&[], Some(map)),
            (_, Input::Record { body: rec, .. }) => (&[], Some(rec)),
            (Src::Input, Input::Text(_)) => unreachable!("records only come as Input::Record"),
        };
        let lookup = |map: &Map, key: &Option<Str>| -> Option<(usize, Content)> {
            let key = key.as_ref()?;
            map.iter().enumerate().find_map(|(i, (k, v))| {
                if **k == **key {
                    Content::of(v).map(|c| (i, c))
                } else {
                    None
                }
            })
        };
        let (content, first_key_holds, pattern, group) = match map {
            None => (Content::Line, true, None, None),
            Some(map) => {
                let (idx, content) = lookup(map, &self.key_content)?;
                let kc = self.key_content.as_deref().unwrap_or_default();
                let first = map.iter().position(|(k, _)| &**k == kc) == Some(idx);
                let pattern = lookup(map, &p.key_pattern).map(|(_, c)| c);
                let group = lookup(map, &p.key_group).map(|(_, c)| c);
                (content, first, pattern, group)
            }
        };
        let decision = match &p.kind {
            Kind::Regex(rules) => {
                let text = content.bytes(line);
                let gi = self.group_index(group.as_ref().map(|g| g.bytes(line)));
                let state = gi.and_then(|i| self.groups[i].rule);
                match state.and_then(|r| rules.continuation(r, text)) {
                    Some(n) => Decision::Cont(n),
                    None => Decision::Start(rules.start(text)?),
                }
            }
            Kind::EndsWith(suffix) => {
                let data = pattern.as_ref().unwrap_or(&content).bytes(line);
                if suffix.len() <= data.len() {
                    Decision::Join(data.ends_with(suffix) != p.negate)
                } else if map.is_none() {
                    Decision::Swallow
                } else {
                    return None;
                }
            }
            Kind::Equal(word) => {
                let data = pattern.as_ref().unwrap_or(&content).bytes(line);
                Decision::Join((data == &**word) != p.negate)
            }
        };
        Some(Prepared {
            src,
            time,
            content,
            first_key_holds,
            group,
            decision,
        })
    }
}

/// The `parser` of a multiline parser on one text.
fn run_line_parser(
    lp: &LineParser,
    text: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<(Map, Option<EventTime>)> {
    match lp {
        LineParser::None => None,
        LineParser::Docker => parse_docker(text, scratch),
        LineParser::Cri => parse_cri(text).map(|(m, t)| (m, Some(t))),
        LineParser::Custom(parser) => {
            let mut map = Map::new();
            let t = parser.parse(text, &mut map).ok()?;
            Some((map, t))
        }
    }
}

impl Engine {
    pub fn new(parsers: Vec<Arc<MlParser>>, key_content: Option<Str>) -> Engine {
        let period = parsers
            .iter()
            .map(|p| p.flush_ms)
            .max()
            .unwrap_or(super::DEFAULT_FLUSH_MS);
        let insts = parsers
            .into_iter()
            .map(|parser| Inst {
                key_content: key_content.clone().or_else(|| parser.key_content.clone()),
                parser,
                groups: vec![Group::new(b"_default")],
            })
            .collect();
        Engine {
            insts,
            lru: None,
            period: Duration::from_millis(period),
            anchor: None,
            pending_since: None,
            limit: DEFAULT_BUFFER_LIMIT,
            scratch: Vec::new(),
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    pub fn set_buffer_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub fn append(&mut self, input: Input<'_>, time: EventTime, at: At, out: &mut Vec<MlRecord>) {
        // Fluent Bit stamps a line without a time when it takes it.
        let time = if time == EventTime::default() {
            EventTime::now()
        } else {
            time
        };
        self.anchor.get_or_insert(at.now);
        let lru = self.lru;
        let order = lru
            .into_iter()
            .chain((0..self.insts.len()).filter(|&i| Some(i) != lru));
        let mut taken = None;
        for i in order {
            if let Some(prep) = self.insts[i].prepare(&input, time, &mut self.scratch) {
                taken = Some((i, prep));
                break;
            }
        }
        match taken {
            Some((i, prep)) => {
                self.lru = Some(i);
                self.commit(i, prep, input, at, out);
            }
            None => self.alone(input, time, at, out),
        }
        if self
            .insts
            .iter()
            .any(|inst| inst.groups.iter().any(Group::held))
        {
            self.pending_since.get_or_insert(at.now);
        } else {
            self.pending_since = None;
        }
    }

    /// `package_content` and `flb_ml_rule_process` for a line parser `i` takes.
    fn commit(
        &mut self,
        i: usize,
        prep: Prepared,
        input: Input<'_>,
        at: At,
        out: &mut Vec<MlRecord>,
    ) {
        let limit = self.limit;
        let inst = &mut self.insts[i];
        let (line, record, metadata) = match input {
            Input::Text(line) => (line, None, None),
            Input::Record { body, metadata } => (&[][..], Some(body), Some(metadata)),
        };
        let gi = inst.group_or_create(prep.group.as_ref().map(|g| g.bytes(line)));
        let mut map = match prep.src {
            Src::None => None,
            Src::Parsed(map) => Some(map),
            Src::Input => record,
        };
        let kc = &inst.key_content;
        let g = &mut inst.groups[gi];
        let text = prep.content.bytes(line);
        let rules = match &inst.parser.kind {
            Kind::Regex(rules) => rules,
            _ => {
                let Decision::Join(complete) = prep.decision else {
                    return; // Swallow
                };
                if complete && !g.held() && prep.first_key_holds && encodable(prep.time) {
                    // The record is this line alone: no buffer, no copy.
                    g.time = prep.time;
                    let body = match map {
                        Some(map) => Some(map),
                        // An empty text makes no record.
                        None if text.is_empty() => None,
                        None => Some(vec![(
                            content_key(kc),
                            text_value(text, kc, &mut self.scratch),
                        )]),
                    };
                    if let Some(body) = body {
                        let md = g.take_metadata();
                        out.push(MlRecord {
                            metadata: md,
                            ..MlRecord::new(prep.time, body, at.first, at.end)
                        });
                    }
                    g.metadata.clear();
                } else {
                    if g.context.is_none() {
                        g.time = prep.time;
                        g.context = map;
                    }
                    g.breakline(kc);
                    g.buf.extend_from_slice(text);
                    g.touch(at);
                    if complete {
                        g.flush(kc, out);
                    }
                }
                if let Some(md) = &metadata {
                    g.add_metadata(md);
                }
                return;
            }
        };
        let rule = match prep.decision {
            Decision::Cont(n) => {
                g.touch(at);
                if g.buf.last().is_some_and(|&b| b != b'\n') {
                    g.buf.push(b'\n');
                }
                if text.is_empty() {
                    g.buf.push(b'\n');
                } else if g.cat(text, limit) {
                    g.flush(kc, out);
                    g.rule = None;
                    return;
                }
                n
            }
            Decision::Start(s) => {
                if !g.buf.is_empty() {
                    g.flush(kc, out);
                }
                g.rule = Some(s);
                g.touch(at);
                if g.cat(text, limit) {
                    return;
                }
                // register_context: the time always, the map if none is held yet.
                g.time = prep.time;
                if g.context.is_none() {
                    let flushes_now = rules.rules[s].next_has_start && !g.buf.is_empty();
                    g.context = if flushes_now { map.clone() } else { map.take() };
                }
                s
            }
            Decision::Join(_) | Decision::Swallow => {
                unreachable!("regex rules decide Cont or Start")
            }
        };
        // try_flushing_buffer
        g.rule = Some(rule);
        if rules.rules[rule].next_has_start && !g.buf.is_empty() {
            g.flush(kc, out);
        }
        // package_content registers a line when no map is held, then its metadata.
        if g.context.is_none() {
            g.time = prep.time;
            if let Some(map) = map {
                g.context = Some(map);
                g.touch(at);
            }
        }
        if let Some(md) = &metadata {
            g.add_metadata(md);
        }
    }

    /// A line no parser takes: flush everything, then the line alone.
    fn alone(&mut self, input: Input<'_>, time: EventTime, at: At, out: &mut Vec<MlRecord>) {
        for inst in &mut self.insts {
            for g in &mut inst.groups {
                g.flush(&inst.key_content, out);
            }
        }
        let Some(inst) = self.insts.first_mut() else {
            // No parser at all: pass the line through.
            let rec = match input {
                Input::Text(line) => MlRecord::new(
                    time,
                    vec![(words().log.clone(), bytes_value(line))],
                    at.first,
                    at.end,
                ),
                Input::Record { body, metadata } => MlRecord {
                    metadata,
                    ..MlRecord::new(time, body, at.first, at.end)
                },
            };
            out.push(rec);
            return;
        };
        let kc = &inst.key_content;
        let g = &mut inst.groups[0];
        g.time = time;
        match input {
            // An empty text makes no record.
            Input::Text(line) if line.is_empty() && !g.held() => {}
            Input::Text(line)
                if !g.held()
                    && encodable(time)
                    && (self.limit == 0 || line.len() <= self.limit) =>
            {
                let body = vec![(content_key(kc), text_value(line, kc, &mut self.scratch))];
                out.push(MlRecord::new(time, body, at.first, at.end));
            }
            Input::Text(line) => {
                g.touch(at);
                g.cat(line, self.limit);
                g.flush(kc, out);
            }
            Input::Record { body, metadata } => {
                g.add_metadata(&metadata);
                g.touch(at);
                if g.context.is_none() {
                    g.context = Some(body);
                }
                g.flush(kc, out);
            }
        }
    }

    /// Flushes every group when the timer has fired since the stream began holding.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<MlRecord>) {
        let Some(deadline) = self.deadline() else {
            return;
        };
        if now >= deadline {
            self.flush_groups(out);
            self.pending_since = self.any_held().then_some(deadline);
        }
    }

    pub fn flush_all(&mut self, out: &mut Vec<MlRecord>) {
        self.flush_groups(out);
        if !self.any_held() {
            self.pending_since = None;
        }
    }

    fn flush_groups(&mut self, out: &mut Vec<MlRecord>) {
        for inst in &mut self.insts {
            for g in &mut inst.groups {
                g.flush(&inst.key_content, out);
            }
        }
    }

    fn any_held(&self) -> bool {
        self.insts
            .iter()
            .any(|inst| inst.groups.iter().any(Group::held))
    }

    pub fn pending_from(&self) -> Option<u64> {
        self.insts
            .iter()
            .flat_map(|inst| inst.groups.iter())
            .filter_map(|g| g.span.map(|s| s.0))
            .min()
    }

    /// The first tick of the flush timer (period `flush_timeout`, phase of the first
    /// append) after the stream began holding.
    pub fn deadline(&self) -> Option<Instant> {
        let since = self.pending_since?;
        let anchor = self.anchor?;
        let period = self.period.as_nanos().max(1);
        let ticks = since.saturating_duration_since(anchor).as_nanos() / period + 1;
        Some(anchor + Duration::from_nanos(u64::try_from(ticks * period).unwrap_or(u64::MAX)))
    }
}

/// A text value as Fluent Bit flushes one line: with `\n` added when there is no
/// `key_content`.
fn text_value(text: &[u8], key_content: &Option<Str>, scratch: &mut Vec<u8>) -> Value {
    if key_content.is_none() && text.last() != Some(&b'\n') {
        scratch.clear();
        scratch.extend_from_slice(text);
        scratch.push(b'\n');
        bytes_value(scratch)
    } else {
        bytes_value(text)
    }
}
