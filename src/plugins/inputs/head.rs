//! `head` input: the head of a file, read again from its start at every interval.
//! Fluent Bit: plugins/in_head/in_head.c
//!
//! Three shapes, as Fluent Bit:
//! * default: one read of up to `buf_size` bytes, as `{key: bytes[, "path": file]}`;
//! * `lines N`: the first N lines (newlines kept) as `{key: text[, "path": file]}`;
//! * `split_line on` (`lines` defaults to 10 then): `{["path": file,] "line0": ..,
//!   "line1": ..}`, one key per line without its newline, `""` past the end of file.
//!
//! Lines are read as C `fgets` does: a line longer than the buffer (510 bytes with
//! `lines`, `buf_size - 1` with `split_line`) counts as several lines, and a line ends
//! at its first NUL byte.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Duration;

use super::collect_every;
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Str, Value};
use crate::parser::types::text_value;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new("file", PropKind::Str, None, "Set the file to read."),
    PropSpec::new("key", PropKind::Str, Some("head"), "Set the record key."),
    PropSpec::new(
        "buf_size",
        PropKind::Size,
        Some("256"),
        "Set the read buffer size (bytes read without lines; the longest line with split_line).",
    ),
    PropSpec::new(
        "split_line",
        PropKind::Bool,
        Some("false"),
        "Generate one key/value pair per line (line0, line1, ...).",
    ),
    PropSpec::new(
        "lines",
        PropKind::Int,
        Some("0"),
        "Number of lines to read (0: read buf_size bytes instead).",
    ),
    PropSpec::new(
        "add_path",
        PropKind::Bool,
        Some("false"),
        "Append the file path to records under the key 'path'.",
    ),
    super::INTERVAL_SEC,
    super::INTERVAL_NSEC,
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "head",
    description: "Head Input",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

/// Fluent Bit reads `lines` with a fixed 512-byte `fgets` buffer.
const LINE_CHUNK: usize = 510;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Bytes,
    Lines(usize),
    Split(usize),
}

struct HeadInput {
    file: Arc<str>,
    key: Str,
    buf_size: usize,
    mode: Mode,
    add_path: bool,
    interval: Duration,
    /// `line0`, `line1`, ... for `split_line`.
    line_keys: Vec<Str>,
}

fn build(props: &Props, _: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let Some(file) = props.str("file").filter(|f| !f.is_empty()) else {
        return Err(ConfigError::invalid(
            props.span(),
            "[input:head] no 'file' was given: set 'file' to the path of the file to read"
                .to_string(),
            None,
        ));
    };
    let buf_size = props.size("buf_size").unwrap_or(256);
    if buf_size == 0 || buf_size > (1 << 30) {
        return Err(props.error("buf_size", "a size from 1 byte to 1G"));
    }
    let lines = props.int("lines").unwrap_or(0);
    if lines > 1_000_000 {
        return Err(props.error("lines", "a number of lines up to 1000000"));
    }
    let split = props.bool("split_line").unwrap_or(false);
    let mode = match (split, lines) {
        (true, n) if n <= 0 => Mode::Split(10),
        (true, n) => Mode::Split(n as usize),
        (false, n) if n > 0 => Mode::Lines(n as usize),
        _ => Mode::Bytes,
    };
    Ok(Box::new(HeadInput {
        file: Arc::from(file),
        key: Arc::from(props.str("key").unwrap_or("head")),
        buf_size: buf_size as usize,
        mode,
        add_path: props.bool("add_path").unwrap_or(false),
        interval: super::interval_or_1s(props)?,
        line_keys: line_keys(mode),
    }))
}

fn line_keys(mode: Mode) -> Vec<Str> {
    match mode {
        Mode::Split(n) => (0..n).map(|i| Arc::from(format!("line{i}"))).collect(),
        _ => Vec::new(),
    }
}

/// Reads one C `fgets` line into `out`: bytes up to and including `\n`, at most `max`;
/// `false` at end of file. What follows a NUL byte is read but not kept, as a C
/// string ends there.
fn fgets(r: &mut impl BufRead, max: usize, out: &mut Vec<u8>) -> std::io::Result<bool> {
    out.clear();
    let (mut got, mut nul) = (0, false);
    while got < max {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (take, ended) = super::fgets_step(buf, max - got, out, &mut nul);
        got += take;
        r.consume(take);
        if ended {
            break;
        }
    }
    Ok(got > 0)
}

/// Why a sample could not be taken.
type Failure = String;

impl HeadInput {
    fn open(&self) -> Result<BufReader<File>, Failure> {
        File::open(&*self.file)
            .map(BufReader::new)
            .map_err(|e| format!("cannot open {}: {e}", self.file))
    }

    /// One sample: `Err` carries the reason, and the record Fluent Bit still makes
    /// then (an empty value when the file cannot be read), if any.
    fn sample(
        &self,
        buf: &mut Vec<u8>,
        line: &mut Vec<u8>,
        path_key: &Str,
    ) -> (Option<Map>, Option<Failure>) {
        let path = || (path_key.clone(), Value::Str(self.file.clone()));
        match self.mode {
            Mode::Split(n) => {
                let mut r = match self.open() {
                    Ok(r) => r,
                    Err(e) => return (None, Some(e)),
                };
                let mut body = Vec::with_capacity(n + 1);
                if self.add_path {
                    body.push(path());
                }
                let max = self.buf_size.saturating_sub(1).max(1);
                let mut failure = None;
                for key in &self.line_keys[..n] {
                    let value = match fgets(&mut r, max, line) {
                        Ok(true) => {
                            if line.last() == Some(&b'\n') {
                                line.pop();
                            }
                            text_value(line)
                        }
                        Ok(false) => Value::Str(Arc::from("")),
                        Err(e) => {
                            failure.get_or_insert_with(|| format!("read {}: {e}", self.file));
                            Value::Str(Arc::from(""))
                        }
                    };
                    body.push((key.clone(), value));
                }
                (Some(body), failure)
            }
            Mode::Lines(n) => {
                buf.clear();
                let failure = match self.open() {
                    Ok(mut r) => (0..n)
                        .map(|_| {
                            let more = fgets(&mut r, LINE_CHUNK, line)?;
                            buf.extend_from_slice(line);
                            Ok::<_, std::io::Error>(more)
                        })
                        .find(|r| !matches!(r, Ok(true)))
                        .and_then(|r| r.err())
                        .map(|e| format!("read {}: {e}", self.file)),
                    Err(e) => Some(e),
                };
                (Some(self.single(buf, path)), failure)
            }
            Mode::Bytes => {
                buf.clear();
                let failure = match File::open(&*self.file) {
                    Ok(f) => {
                        // One read(2), as Fluent Bit: a FIFO or a short read gives less.
                        buf.resize(self.buf_size, 0);
                        match (&f).read(buf) {
                            Ok(n) => {
                                buf.truncate(n);
                                None
                            }
                            Err(e) => {
                                // Fluent Bit's record for a failed read is garbage;
                                // none is made.
                                return (None, Some(format!("read {}: {e}", self.file)));
                            }
                        }
                    }
                    Err(e) => {
                        buf.clear();
                        Some(format!("cannot open {}: {e}", self.file))
                    }
                };
                (Some(self.single(buf, path)), failure)
            }
        }
    }

    fn single(&self, value: &[u8], path: impl Fn() -> (Str, Value)) -> Map {
        let mut body = Vec::with_capacity(2);
        body.push((self.key.clone(), text_value(value)));
        if self.add_path {
            body.push(path());
        }
        body
    }
}

impl Input for HeadInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let name = ctx.name.clone();
            let path_key: Str = Arc::from("path");
            let (mut buf, mut line) = (Vec::new(), Vec::new());
            // The last failure logged: a file that stays missing is reported once.
            let mut logged: Option<Failure> = None;
            collect_every(&mut ctx, self.interval, || {
                let (body, failure) = self.sample(&mut buf, &mut line, &path_key);
                match failure {
                    Some(e) if logged.as_ref() != Some(&e) => {
                        crate::error!("[input:head:{name}] {e}");
                        logged = Some(e);
                    }
                    Some(_) => {}
                    None => logged = None,
                }
                body.map(|b| Record::new(EventTime::now(), b))
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut r = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        let mut line = Vec::new();
        while fgets(&mut r, max, &mut line).unwrap() {
            out.push(line.clone());
        }
        out
    }

    #[test]
    fn fgets_splits_as_c_does() {
        let l = lines_of(b"first line\nsecond\n\nlast", 100);
        assert_eq!(l, [&b"first line\n"[..], b"second\n", b"\n", b"last"]);
        // A line longer than the buffer continues as the next "line".
        let l = lines_of(b"abcdefgh\nij\n", 3);
        assert_eq!(l, [&b"abc"[..], b"def", b"gh\n", b"ij\n"]);
        // The text after a NUL is read but not kept.
        let l = lines_of(b"ab\0cd\nef\n", 100);
        assert_eq!(l, [&b"ab"[..], b"ef\n"]);
        assert!(lines_of(b"", 10).is_empty());
    }

    fn head(mode: Mode, buf_size: usize, file: &str, add_path: bool) -> HeadInput {
        HeadInput {
            file: Arc::from(file),
            key: Arc::from("head"),
            buf_size,
            mode,
            add_path,
            interval: Duration::from_secs(1),
            line_keys: line_keys(mode),
        }
    }

    fn sample(h: &HeadInput) -> (Option<Map>, Option<Failure>) {
        h.sample(&mut Vec::new(), &mut Vec::new(), &Arc::from("path"))
    }

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    #[test]
    fn the_three_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.txt");
        std::fs::write(&p, "first line\nsecond\n\nfourth one\n").unwrap();
        let f = p.to_str().unwrap();

        let (body, failure) = sample(&head(Mode::Bytes, 8, f, false));
        assert_eq!(body.unwrap(), vec![(Arc::from("head"), s("first li"))]);
        assert!(failure.is_none());

        let (body, _) = sample(&head(Mode::Lines(3), 8, f, true));
        assert_eq!(
            body.unwrap(),
            vec![
                (Arc::from("head"), s("first line\nsecond\n\n")),
                (Arc::from("path"), s(f)),
            ]
        );

        let (body, _) = sample(&head(Mode::Split(5), 256, f, true));
        let keys: Vec<(&str, Value)> = body
            .unwrap()
            .into_iter()
            .map(|(k, v)| (Box::leak(k.to_string().into_boxed_str()) as &str, v))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("path", s(f)),
                ("line0", s("first line")),
                ("line1", s("second")),
                ("line2", s("")),
                ("line3", s("fourth one")),
                ("line4", s("")),
            ]
        );
    }

    #[test]
    fn a_missing_file_gives_an_empty_value_and_a_reason() {
        let (body, failure) = sample(&head(Mode::Bytes, 256, "/nonexistent/x", false));
        assert_eq!(body.unwrap(), vec![(Arc::from("head"), s(""))]);
        assert!(failure.unwrap().contains("/nonexistent/x"));
        // split_line makes no record then, as Fluent Bit.
        let (body, failure) = sample(&head(Mode::Split(2), 256, "/nonexistent/x", false));
        assert!(body.is_none() && failure.is_some());
    }
}
