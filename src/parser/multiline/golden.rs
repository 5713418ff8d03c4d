//! Golden tests: the cases of tests/data/fluent-bit/multiline/, each a Fluent Bit 5.1.1
//! configuration (`<case>.conf`) run on a log (`path`), and what its stdout printed
//! (`<case>.expected`). The case's tail input (or multiline filter) is rebuilt on an
//! `MlStream`, the log fed line by line, and every record must print the same.
//!
//! Times: tail stamps a line with the time it reads it, which no test can reproduce;
//! such records get a small made-up time here and their time is not compared. Times
//! read from the lines (Docker, CRI, parsers) are compared exactly.
//!
//! Cases that need `[PARSER]`s (a multiline parser's `parser`, tail's legacy modes)
//! run once parsers are built; until then they are reported as skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::parser::{load, load_parsers_file};
use crate::config::SectionKind;
use crate::event::format::write_print_record;
use crate::event::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fluent-bit/multiline")
}

/// The made-up time of line `i` (seconds under 1e6: never compared).
fn line_time(i: usize) -> EventTime {
    EventTime::new(100 + i as i64, 0)
}

fn is_made_up(t: &str) -> bool {
    t.split('.').next().is_some_and(|s| s.len() < 7)
}

/// `(time, rest)` of each record printed for `tag`: `[N] tag: [[<time>, <rest>`.
fn split_printed(text: &str, tag: &str) -> Vec<(String, String)> {
    let head =
        ::regex::Regex::new(&format!(r"(?m)^\[\d+\] {}: \[\[", ::regex::escape(tag))).unwrap();
    let starts: Vec<(usize, usize)> = head.find_iter(text).map(|m| (m.start(), m.end())).collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &(_, body))| {
            let end = starts.get(i + 1).map_or(text.len(), |s| s.0);
            let rec = text[body..end]
                .strip_suffix('\n')
                .unwrap_or(&text[body..end]);
            let (time, rest) = rec.split_once(", ").unwrap();
            (time.to_string(), rest.to_string())
        })
        .collect()
}

fn render(recs: &[MlRecord], tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in recs {
        write_print_record(&mut out, 0, tag, &r.clone().into_record());
    }
    split_printed(&String::from_utf8_lossy(&out), tag)
}

/// The `key value` pairs of the first section of `kind` (named `name`).
fn section_props(
    doc: &crate::config::Document,
    kind: SectionKind,
    name: &str,
) -> Option<Vec<(String, String)>> {
    doc.sections
        .iter()
        .find(|s| {
            s.kind == kind
                && s.entries
                    .iter()
                    .any(|e| e.key == "name" && e.value.eq_ignore_ascii_case(name))
        })
        .map(|s| {
            s.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every value of `key`, comma lists split (`multiline.parser docker, cri`).
fn list(props: &[(String, String)], key: &str) -> Vec<String> {
    props
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The parsers file of a case: all of it when `[PARSER]`s can be built, else the
/// multiline parsers that need none.
struct Defs {
    full: Option<Parsers>,
    ml: Vec<Arc<MlParser>>,
}

impl Defs {
    fn load(path: &Path) -> Defs {
        let sections = load_parsers_file(path).unwrap().sections;
        let mut full = Parsers::default();
        if full
            .add_sections(&path.display().to_string(), &sections)
            .is_ok()
        {
            return Defs {
                full: Some(full),
                ml: Vec::new(),
            };
        }
        let ml = sections
            .iter()
            .filter(|s| s.kind == SectionKind::MultilineParser)
            .filter_map(|s| MlParser::from_section(s, &Parsers::default()).ok())
            .map(Arc::new)
            .collect();
        Defs { full: None, ml }
    }

    fn multiline(&self, name: &str) -> Option<Arc<MlParser>> {
        match &self.full {
            Some(p) => p.multiline(name),
            None => builtin(name).or_else(|| self.ml.iter().find(|p| &*p.name == name).cloned()),
        }
    }

    fn parser(&self, name: &str) -> Option<Arc<Parser>> {
        self.full.as_ref().and_then(|p| p.parser(name))
    }
}

enum Outcome {
    Same,
    Skipped(String),
}

/// Runs one case; `Err` describes the first difference.
fn run(case: &str) -> Result<Outcome, String> {
    let dir = dir();
    let doc = load(&dir.join(format!("{case}.conf"))).map_err(|e| e.to_string())?;
    let service: Vec<(String, String)> = doc
        .sections
        .iter()
        .filter(|s| s.kind == SectionKind::Service)
        .flat_map(|s| s.entries.iter().map(|e| (e.key.clone(), e.value.clone())))
        .collect();
    let defs = Defs::load(&dir.join(prop(&service, "parsers_file").unwrap()));
    let tail = section_props(&doc, SectionKind::Input, "tail").ok_or("no tail input")?;
    let filter = section_props(&doc, SectionKind::Filter, "multiline");
    let tag = prop(&tail, "tag").unwrap().to_string();
    let exits = prop(&tail, "exit_on_eof").is_some_and(|v| v == "true");
    let key: Str = Arc::from(prop(&tail, "key").unwrap_or("log"));
    let tail_parser = prop(&tail, "parser");
    let skip = |why: &str| Ok(Outcome::Skipped(why.to_string()));

    // What tail does at the end: the multiline engine's pending records are lost when
    // Fluent Bit exits at EOF; the legacy modes flush theirs when tail pauses.
    let mut final_flush = !exits;
    let mut legacy_order = false;
    let mut records_in = false;
    let mut stream = if let Some(f) = &filter {
        let names = list(f, "multiline.parser");
        let Some(parsers) = names
            .iter()
            .map(|n| defs.multiline(n))
            .collect::<Option<Vec<_>>>()
        else {
            return skip("a multiline parser needs [PARSER]s");
        };
        records_in = true;
        if prop(f, "buffer") == Some("off") {
            final_flush = true; // flushed after every chunk
        }
        MlStream::new(parsers, prop(f, "multiline.key_content").map(Arc::from))
    } else if !list(&tail, "multiline.parser").is_empty() {
        let names = list(&tail, "multiline.parser");
        let Some(parsers) = names
            .iter()
            .map(|n| defs.multiline(n))
            .collect::<Option<Vec<_>>>()
        else {
            return skip("a multiline parser needs [PARSER]s");
        };
        MlStream::new(parsers, None)
    } else if prop(&tail, "multiline") == Some("on") {
        let Some(first) = prop(&tail, "parser_firstline").and_then(|n| defs.parser(n)) else {
            return skip("multiline on needs [PARSER]s");
        };
        let others = tail
            .iter()
            .filter(|(k, _)| k.starts_with("parser_") && k != "parser_firstline")
            .map(|(_, v)| defs.parser(v).unwrap())
            .collect();
        let flush = prop(&tail, "multiline_flush").map_or(4, |v| v.parse().unwrap());
        final_flush = true;
        legacy_order = true;
        MlStream::firstline(first, others, Duration::from_secs(flush), key.clone())
    } else if prop(&tail, "docker_mode") == Some("on") {
        let first = match prop(&tail, "docker_mode_parser") {
            Some(n) => match defs.parser(n) {
                Some(p) => Some(p),
                None => return skip("docker_mode_parser needs [PARSER]s"),
            },
            None => None,
        };
        if tail_parser.is_some() && defs.full.is_none() {
            return skip("tail's parser needs [PARSER]s");
        }
        final_flush = true;
        let flush = prop(&tail, "docker_mode_flush").map_or(4, |v| v.parse().unwrap());
        MlStream::docker_mode(Duration::from_secs(flush), first, key.clone())
    } else {
        return skip("not a multiline case");
    };

    let log = std::fs::read(dir.join(prop(&tail, "path").unwrap())).map_err(|e| e.to_string())?;
    let now = Instant::now();
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut lines: Vec<&[u8]> = log.split(|&b| b == b'\n').collect();
    lines.pop(); // what follows the last newline is not a line yet
    for (i, raw) in lines.into_iter().enumerate() {
        let end = pos + raw.len() as u64 + 1;
        let line = match raw {
            [rest @ .., b'\r'] if raw.len() >= 2 => rest,
            _ => raw,
        };
        if records_in {
            let body = vec![(key.clone(), super::container::bytes_value(line))];
            stream.append_record(line_time(i), body, pos, end, now, &mut out);
        } else {
            stream.append_text(line, line_time(i), pos, end, now, &mut out);
        }
        pos = end;
    }
    if final_flush {
        stream.flush(&mut out);
    }
    // tail's `parser` on what docker_mode gives.
    if let (Some(name), Some(parser)) = (tail_parser, tail_parser.and_then(|n| defs.parser(n))) {
        let _ = name;
        for rec in &mut out {
            let text = match &rec.body[0].1 {
                Value::Str(s) => s.as_bytes().to_vec(),
                _ => continue,
            };
            let mut map = Map::new();
            if let Ok(t) = parser.parse(&text, &mut map) {
                rec.body = map;
                rec.time = t.unwrap_or(rec.time);
            }
        }
    }

    let text = std::fs::read(dir.join(format!("{case}.expected"))).map_err(|e| e.to_string())?;
    let mut want = split_printed(&String::from_utf8_lossy(&text), &tag);
    let mut got = render(&out, &tag);
    if legacy_order {
        // tail appends a joined record at once and a line that goes out alone at the
        // end of the read: the records are the same, their order is tail's.
        want.sort_by(|a, b| a.1.cmp(&b.1));
        got.sort_by(|a, b| a.1.cmp(&b.1));
    }
    let short = |s: &str| s.chars().take(300).collect::<String>();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g.1 != w.1 {
            return Err(format!(
                "record {i}:\n got: {}\nwant: {}",
                short(&g.1),
                short(&w.1)
            ));
        }
        if !is_made_up(&g.0) && g.0 != w.0 {
            return Err(format!("record {i}: time {} != {}", g.0, w.0));
        }
    }
    if got.len() != want.len() {
        return Err(format!(
            "{} records, Fluent Bit printed {}",
            got.len(),
            want.len()
        ));
    }
    Ok(Outcome::Same)
}

#[test]
fn every_case_prints_what_fluent_bit_printed() {
    let dir = dir();
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".conf")
                .map(str::to_string)
        })
        .filter(|c| dir.join(format!("{c}.expected")).exists())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        match run(case) {
            Ok(Outcome::Same) => ran += 1,
            Ok(Outcome::Skipped(why)) => eprintln!("{case}: skipped ({why})"),
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    assert!(ran >= 10, "only {ran} cases ran");
}
