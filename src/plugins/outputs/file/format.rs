//! The `format` values of the `file` output, each record rendered as `cb_file_flush`
//! writes it. Fluent Bit: plugins/out_file/file.c (`csv_output`, `ltsv_output`,
//! `template_output`, `plain_output`, the default `tag: [time, {record}]` line).
//!
//! Values in `csv`, `ltsv` and `template` are printed by `msgpack_object_print`
//! ([`write_print_value`]): strings in double quotes and unescaped, floats as `%f`, maps
//! as `{"k"=>v}`. `out_file` and `plain` write the body as Fluent Bit's JSON.

use crate::event::format::{write_json_map, write_msgpack_record, write_print_value};
use crate::event::{EventTime, Record, Value};

/// One piece of a `template`, parsed once at start.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    /// `{}`, `{t}` … `{time}`: Fluent Bit compares the key with `strncmp(key, "time",
    /// len)`, so every prefix of `time` (the empty one too) is the event time.
    Time,
    /// `{key}`; `raw` is the text written when the record has no such key.
    Key {
        key: String,
        raw: String,
    },
}

/// A parsed `template`, e.g. `{time} {message}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Reads `text` as `template_output` walks it: `{` opens a placeholder (a second `{`
    /// before the `}` drops the first one's claim and writes it as text), `}` closes it,
    /// a `}` outside braces and an unclosed `{...` tail are text.
    pub fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut open: Option<usize> = None;
        for (i, c) in text.char_indices() {
            match (c, open) {
                ('{', Some(s)) => {
                    lit.push_str(&text[s..i]);
                    open = Some(i);
                }
                ('{', None) => open = Some(i),
                ('}', Some(s)) => {
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    let key = &text[s + 1..i];
                    pieces.push(if "time".starts_with(key) {
                        Piece::Time
                    } else {
                        Piece::Key {
                            key: key.to_string(),
                            raw: text[s..=i].to_string(),
                        }
                    });
                    open = None;
                }
                (c, None) => lit.push(c),
                (_, Some(_)) => {}
            }
        }
        if let Some(s) = open {
            lit.push_str(&text[s..]);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Template(pieces)
    }

    fn write(&self, out: &mut Vec<u8>, rec: &Record) {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Time => write_time_f(out, rec.time),
                Piece::Key { key, raw } => {
                    // The first occurrence of a repeated key, as the C loop finds it.
                    match rec.body.iter().find(|(k, _)| **k == **key) {
                        Some((_, Value::Str(s))) => out.extend_from_slice(s.as_bytes()),
                        Some((_, v)) => write_print_value(out, v),
                        None => out.extend_from_slice(raw.as_bytes()),
                    }
                }
            }
        }
        out.push(b'\n');
    }
}

/// How records are written.
#[derive(Clone, Debug)]
pub enum FileFormat {
    /// `tag: [sec.nsec, {json}]`, the default.
    OutFile {
        escape_unicode: bool,
    },
    /// The body as JSON, one per line.
    Plain {
        escape_unicode: bool,
    },
    /// `sec.nsec,v1,v2`; with `column_names`, a `timestamp,"k1","k2"` line first.
    Csv {
        delimiter: String,
        column_names: bool,
    },
    /// `"time":%f<TAB>"k1":v1<TAB>"k2":v2`.
    Ltsv {
        delimiter: String,
        label_delimiter: String,
    },
    Template(Template),
    /// Fluent Bit's event bytes, `[[time, {metadata}], {body}]` per record.
    Msgpack,
}

impl FileFormat {
    /// Appends one record to `out`. `header` asks for the CSV column names line (Fluent
    /// Bit writes it before the first record of every file it opens, see
    /// [`super::FileOutput`]); it is ignored by the other formats.
    pub fn write(&self, out: &mut Vec<u8>, tag: &str, rec: &Record, header: bool) {
        match self {
            FileFormat::OutFile { escape_unicode } => {
                out.extend_from_slice(tag.as_bytes());
                out.extend_from_slice(b": [");
                write_sec_nsec(out, rec.time, true);
                out.extend_from_slice(b", ");
                write_json_map(out, &rec.body, *escape_unicode);
                out.extend_from_slice(b"]\n");
            }
            FileFormat::Plain { escape_unicode } => {
                write_json_map(out, &rec.body, *escape_unicode);
                out.push(b'\n');
            }
            FileFormat::Csv {
                delimiter,
                column_names,
            } => {
                // An empty body writes nothing, not even the header it was due.
                if rec.body.is_empty() {
                    return;
                }
                if header && *column_names {
                    out.extend_from_slice(b"timestamp");
                    out.extend_from_slice(delimiter.as_bytes());
                    for (i, (k, _)) in rec.body.iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(delimiter.as_bytes());
                        }
                        // msgpack_object_print of a string key: quoted, raw.
                        out.push(b'"');
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'"');
                    }
                    out.push(b'\n');
                }
                write_sec_nsec(out, rec.time, false);
                for (_, v) in &rec.body {
                    out.extend_from_slice(delimiter.as_bytes());
                    write_print_value(out, v);
                }
                out.push(b'\n');
            }
            FileFormat::Ltsv {
                delimiter,
                label_delimiter,
            } => {
                if rec.body.is_empty() {
                    return;
                }
                out.extend_from_slice(b"\"time\"");
                out.extend_from_slice(label_delimiter.as_bytes());
                write_time_f(out, rec.time);
                for (k, v) in &rec.body {
                    out.extend_from_slice(delimiter.as_bytes());
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'"');
                    out.extend_from_slice(label_delimiter.as_bytes());
                    write_print_value(out, v);
                }
                out.push(b'\n');
            }
            FileFormat::Template(t) => t.write(out, rec),
            FileFormat::Msgpack => write_msgpack_record(out, rec),
        }
    }
}

/// `%lld.%.09ld`, or `PRIu64` seconds for the `out_file` line (negative seconds wrap).
fn write_sec_nsec(out: &mut Vec<u8>, t: EventTime, unsigned: bool) {
    let mut b = itoa::Buffer::new();
    if unsigned {
        out.extend_from_slice(b.format(t.secs as u64).as_bytes());
    } else {
        out.extend_from_slice(b.format(t.secs).as_bytes());
    }
    out.push(b'.');
    let nanos = b.format(t.nanos);
    out.extend(std::iter::repeat_n(
        b'0',
        9usize.saturating_sub(nanos.len()),
    ));
    out.extend_from_slice(nanos.as_bytes());
}

/// `%f` of `flb_time_to_double`.
fn write_time_f(out: &mut Vec<u8>, t: EventTime) {
    write_print_value(out, &Value::Float(t.as_f64()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn rec(body: Vec<(&str, Value)>) -> Record {
        Record::new(
            EventTime::new(1_710_410_400, 123_456_789),
            body.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
        )
    }

    fn s(v: &str) -> Value {
        Value::Str(Arc::from(v))
    }

    fn render(f: &FileFormat, r: &Record, header: bool) -> String {
        let mut out = Vec::new();
        f.write(&mut out, "app.log", r, header);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn template_placeholders_as_template_output_reads_them() {
        let r = rec(vec![
            ("message", s("hi")),
            ("n", Value::Int(-7)),
            ("k", Value::Map(vec![(Arc::from("a"), Value::Float(0.5))])),
            ("n", Value::Int(9)),
        ]);
        let f = |t: &str| render(&FileFormat::Template(Template::parse(t)), &r, false);
        assert_eq!(f("{time} {message}"), "1710410400.123457 hi\n");
        // Every prefix of "time" is the time; "timex" is a key.
        assert_eq!(
            f("{}|{t}|{tim}|{timex}"),
            "1710410400.123457|1710410400.123457|1710410400.123457|{timex}\n"
        );
        // The first of a repeated key; non-strings printed by msgpack_object_print.
        assert_eq!(f("[{n}] {k} {nope}"), "[-7] {\"a\"=>0.500000} {nope}\n");
        // A second `{` writes the first as text; an unclosed one is text; `}` alone too.
        assert_eq!(f("{a{message}} x{ y"), "{ahi} x{ y\n");
        assert_eq!(f("é{message}ü}"), "éhiü}\n");
        assert_eq!(f(""), "\n");
    }

    #[test]
    fn csv_header_and_empty_records() {
        let f = FileFormat::Csv {
            delimiter: ",".into(),
            column_names: true,
        };
        let r = rec(vec![("a", s("x")), ("b", Value::Float(1.5))]);
        assert_eq!(
            render(&f, &r, true),
            "timestamp,\"a\",\"b\"\n1710410400.123456789,\"x\",1.500000\n"
        );
        assert_eq!(
            render(&f, &r, false),
            "1710410400.123456789,\"x\",1.500000\n"
        );
        assert_eq!(render(&f, &rec(vec![]), true), "");
    }

    #[test]
    fn ltsv_and_out_file_lines() {
        let r = rec(vec![("a", s("x y")), ("b", Value::Bool(true))]);
        let ltsv = FileFormat::Ltsv {
            delimiter: "\t".into(),
            label_delimiter: ":".into(),
        };
        assert_eq!(
            render(&ltsv, &r, false),
            "\"time\":1710410400.123457\t\"a\":\"x y\"\t\"b\":true\n"
        );
        assert_eq!(render(&ltsv, &rec(vec![]), false), "");
        let out = FileFormat::OutFile {
            escape_unicode: true,
        };
        assert_eq!(
            render(&out, &rec(vec![("m", s("é"))]), false),
            "app.log: [1710410400.123456789, {\"m\":\"\\u00e9\"}]\n"
        );
        let mut early = rec(vec![]);
        early.time = EventTime::new(5, 7);
        assert_eq!(render(&out, &early, false), "app.log: [5.000000007, {}]\n");
    }
}
