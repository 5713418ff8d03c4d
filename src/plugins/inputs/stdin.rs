//! `stdin` input: records read from the standard input; its end stops the agent.
//! Fluent Bit: plugins/in_stdin/in_stdin.c
//!
//! Without `parser`, the input is a stream of JSON values: a map is a record stamped
//! now, an array is an event (`[time, {body}]` or `[[time, {metadata}], {body}]`). As
//! Fluent Bit, each read is parsed whole: a syntax error anywhere drops what is
//! buffered, and a value that is neither a map nor an array drops the values after it
//! in that read. With `parser`, each line is parsed (a line that does not match is
//! counted and skipped). At the end of input the agent stops, as after SIGTERM.

use std::sync::Arc;

use tokio::io::AsyncReadExt;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Value};
use crate::parser::Parser;
use crate::pipeline::shutdown::ExitRequest;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "parser",
        PropKind::Str,
        None,
        "Set and use a parser for each line.",
    ),
    PropSpec::new(
        "buffer_size",
        PropKind::Size,
        None,
        "Set the read buffer size (16000 bytes by default and at least): the largest record.",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "stdin",
    description: "Standard Input",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

const DEFAULT_BUF_SIZE: u64 = 16000;

struct StdinInput {
    parser: Option<Arc<Parser>>,
    buf_size: usize,
    exit: ExitRequest,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let parser = ctx.parser(props, "parser")?;
    let buf_size = props.size("buffer_size").unwrap_or(DEFAULT_BUF_SIZE);
    if !(DEFAULT_BUF_SIZE..=1 << 30).contains(&buf_size) {
        return Err(props.error(
            "buffer_size",
            format!("a size of at least {DEFAULT_BUF_SIZE} bytes (and at most 1G)"),
        ));
    }
    Ok(Box::new(StdinInput {
        parser,
        buf_size: buf_size as usize,
        exit: ctx.exit.clone(),
    }))
}

/// What a read of the JSON stream gave.
#[derive(Debug, PartialEq)]
enum Stream {
    /// Records; bytes consumed (the rest is an unfinished value).
    Records(Vec<Record>, usize),
    /// Not JSON: everything buffered is dropped.
    Invalid(String),
    /// A value that is neither a map nor an array: the records before it, then the
    /// rest of the buffer is dropped.
    NotARecord(Vec<Record>),
}

/// An event's time: integer seconds, or a double with its fraction.
fn event_time(v: &serde_json::Value) -> Option<EventTime> {
    let n = v.as_number()?;
    if let Some(s) = n.as_i64() {
        return Some(EventTime::new(s, 0));
    }
    let f = n.as_f64()?;
    let secs = f.trunc();
    Some(EventTime::new(secs as i64, ((f - secs) * 1e9) as u32))
}

fn object(v: &serde_json::Value) -> Option<Map> {
    match Value::from_json(v) {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

/// `[time, {body}]` or `[[time, {metadata}], {body}]`.
fn event(a: &[serde_json::Value]) -> Option<Record> {
    let [header, body] = a else { return None };
    let body = object(body)?;
    let (time, metadata) = match header {
        serde_json::Value::Array(h) => match h.as_slice() {
            [t, m] => (event_time(t)?, object(m)?),
            _ => return None,
        },
        t => (event_time(t)?, Map::new()),
    };
    Some(Record {
        time,
        metadata,
        body,
    })
}

/// Parses every complete JSON value of `buf`.
fn parse_stream(buf: &[u8]) -> Stream {
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut parsed = Vec::new();
    let mut used = 0;
    loop {
        match values.next() {
            None => break,
            Some(Ok(v)) => {
                used = values.byte_offset();
                parsed.push(v);
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => return Stream::Invalid(e.to_string()),
        }
    }
    let now = EventTime::now();
    let mut records = Vec::with_capacity(parsed.len());
    for v in &parsed {
        let record = match v {
            serde_json::Value::Object(_) => object(v).map(|body| Record::new(now, body)),
            serde_json::Value::Array(a) => event(a),
            _ => None,
        };
        match record {
            Some(r) => records.push(r),
            None => return Stream::NotARecord(records),
        }
    }
    Stream::Records(records, used)
}

impl StdinInput {
    /// Parses every complete line of `buf` (and, at the end of input, the last one);
    /// returns the bytes consumed. Lines that do not match are counted.
    fn parse_lines(
        &self,
        p: &Parser,
        buf: &[u8],
        eof: bool,
        out: &mut Vec<Record>,
        skipped: &mut u64,
        name: &str,
    ) -> usize {
        let mut start = 0;
        loop {
            let (line, next) = match buf[start..].iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[start..start + i], start + i + 1),
                None if eof && start < buf.len() => (&buf[start..], buf.len()),
                None => return start,
            };
            start = next;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut body = Map::with_capacity(8);
            match p.parse(line, &mut body) {
                Ok(t) => out.push(Record::new(t.unwrap_or_else(EventTime::now), body)),
                Err(_) => {
                    if *skipped == 0 {
                        crate::error!(
                            "[input:stdin:{name}] parser '{}' does not match '{}': line skipped (further ones are counted)",
                            p.name,
                            String::from_utf8_lossy(line)
                        );
                    }
                    *skipped += 1;
                }
            }
        }
    }
}

impl Input for StdinInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let name = ctx.name.clone();
            let mut stdin = tokio::io::stdin();
            // One byte is kept free, as Fluent Bit's buffer keeps a NUL.
            let cap = self.buf_size - 1;
            let mut buf: Vec<u8> = Vec::with_capacity(cap);
            let mut chunk = vec![0u8; cap];
            let mut skipped = 0u64;
            // The rest of an oversized record's line is still to be dropped.
            let mut resync = false;
            loop {
                let room = cap - buf.len();
                if room == 0 {
                    // Fluent Bit reads 0 bytes then and stops as at the end of input;
                    // agent drops the record that does not fit, up to the end of its
                    // line, and reads on.
                    crate::error!(
                        "[input:stdin:{name}] a record is larger than buffer_size ({} bytes): dropped up to the end of its line",
                        self.buf_size
                    );
                    skipped += 1;
                    buf.clear();
                    resync = true;
                    continue;
                }
                let n = tokio::select! {
                    _ = ctx.shutdown.wait() => break,
                    r = stdin.read(&mut chunk[..room]) => r,
                };
                let eof = match n {
                    Ok(0) => true,
                    Ok(n) => {
                        let mut data = &chunk[..n];
                        if resync {
                            match data.iter().position(|&b| b == b'\n') {
                                Some(i) => {
                                    data = &data[i + 1..];
                                    resync = false;
                                }
                                None => data = &[],
                            }
                        }
                        buf.extend_from_slice(data);
                        false
                    }
                    Err(e) => {
                        crate::error!("[input:stdin:{name}] read: {e}");
                        true
                    }
                };
                let mut records = Vec::new();
                match &self.parser {
                    Some(p) => {
                        let used =
                            self.parse_lines(p, &buf, eof, &mut records, &mut skipped, &name);
                        buf.drain(..used);
                    }
                    None if buf.iter().all(u8::is_ascii_whitespace) => buf.clear(),
                    None => match parse_stream(&buf) {
                        Stream::Records(r, used) => {
                            records = r;
                            buf.drain(..used);
                        }
                        Stream::Invalid(e) => {
                            crate::debug!(
                                "[input:stdin:{name}] invalid JSON message, skipping: {e}"
                            );
                            skipped += 1;
                            buf.clear();
                        }
                        Stream::NotARecord(r) => {
                            crate::error!("[input:stdin:{name}] invalid record found, it's not a JSON map or array");
                            skipped += 1;
                            records = r;
                            buf.clear();
                        }
                    },
                }
                if !records.is_empty() {
                    ctx.out.send(records).await?;
                }
                if eof {
                    crate::warn!("[input:stdin:{name}] end of file (stdin closed by remote end)");
                    if skipped > 0 {
                        crate::warn!("[input:stdin:{name}] {skipped} records were skipped");
                    }
                    self.exit.exit(0);
                    break;
                }
            }
            ctx.shutdown.wait().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(s: &Stream) -> Vec<String> {
        let records = match s {
            Stream::Records(r, _) | Stream::NotARecord(r) => r,
            Stream::Invalid(_) => return vec![],
        };
        records.iter().map(|r| format!("{:?}", r.body)).collect()
    }

    #[test]
    fn maps_and_events_are_records_and_the_unfinished_value_waits() {
        let input = br#"{"a":1} [1700000000, {"c":3}]
[[1700000000.25, {"m":1}], {"d":4}]
{"b":"#;
        let s = parse_stream(input);
        let Stream::Records(r, used) = &s else {
            panic!("{s:?}")
        };
        assert_eq!(r.len(), 3);
        assert_eq!(&input[*used..], b"\n{\"b\":");
        assert_eq!(r[1].time, EventTime::new(1700000000, 0));
        assert_eq!(r[2].time, EventTime::new(1700000000, 250_000_000));
        assert_eq!(format!("{:?}", r[2].metadata), r#"[("m", UInt(1))]"#);
    }

    #[test]
    fn a_syntax_error_drops_everything_and_a_scalar_what_follows() {
        assert!(matches!(
            parse_stream(b"{\"a\":1}\nnot json\n{\"b\":2}\n"),
            Stream::Invalid(_)
        ));
        let s = parse_stream(b"{\"a\":1}\n\"str\"\n{\"e\":5}\n");
        assert!(matches!(s, Stream::NotARecord(_)));
        assert_eq!(bodies(&s), [r#"[("a", UInt(1))]"#]);
        // An array that is not an event is not a record either.
        assert!(matches!(parse_stream(b"[1,2,3]"), Stream::NotARecord(_)));
    }
}
