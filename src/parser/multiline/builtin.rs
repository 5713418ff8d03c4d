//! The built-in multiline parsers, with Fluent Bit's rules, keys and timeouts.
//!
//! Fluent Bit: src/multiline/flb_ml_parser_{docker,cri,go,python,java,ruby}.c

use std::sync::{Arc, OnceLock};

use super::rules::{RuleDef, Rules};
use super::{Kind, LineParser, MlParser, DEFAULT_FLUSH_MS};

/// The names of the built-in multiline parsers.
pub const BUILTINS: &[&str] = &["docker", "cri", "go", "python", "java", "ruby"];

/// A built-in multiline parser by name (`docker`, `cri`, `go`, `python`, `java`, `ruby`),
/// case-insensitive as Fluent Bit looks names up.
pub fn builtin(name: &str) -> Option<Arc<MlParser>> {
    static ALL: OnceLock<Vec<Arc<MlParser>>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        vec![
            docker(),
            cri(),
            regex("go", GO),
            regex("python", PYTHON),
            regex("java", JAVA),
            regex("ruby", RUBY),
        ]
        .into_iter()
        .map(Arc::new)
        .collect()
    });
    all.iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .cloned()
}

/// Docker's `json-file`: a `log` that does not end with `\n` is a part (Docker splits
/// lines at 16 KiB); parts of one `stream` are joined until one ends with `\n`.
fn docker() -> MlParser {
    MlParser {
        name: Arc::from("docker"),
        kind: Kind::EndsWith(Box::from(&b"\n"[..])),
        negate: false,
        flush_ms: DEFAULT_FLUSH_MS,
        key_content: Some(Arc::from("log")),
        key_pattern: None,
        key_group: Some(Arc::from("stream")),
        line: LineParser::Docker,
    }
}

/// CRI (containerd, CRI-O): `_p` `P` is a part, `F` the last part of a line.
fn cri() -> MlParser {
    MlParser {
        name: Arc::from("cri"),
        kind: Kind::Equal(Box::from(&b"F"[..])),
        negate: false,
        flush_ms: DEFAULT_FLUSH_MS,
        key_content: Some(Arc::from("log")),
        key_pattern: Some(Arc::from("_p")),
        key_group: Some(Arc::from("stream")),
        line: LineParser::Cri,
    }
}

type Def = (&'static str, &'static str, &'static str);

const GO: &[Def] = &[
    ("start_state", r"/\bpanic: /", "go_after_panic"),
    ("start_state", r"/http: panic serving/", "go_goroutine"),
    ("go_after_panic", r"/^$/", "go_goroutine"),
    (
        "go_after_panic, go_after_signal, go_frame_1",
        r"/^$/",
        "go_goroutine",
    ),
    ("go_after_panic", r"/^\[signal /", "go_after_signal"),
    (
        "go_goroutine",
        r"/^goroutine \d+ \[[^\]]+\]:$/",
        "go_frame_1",
    ),
    (
        "go_frame_1",
        r"/^(?:[^\s.:]+\.)*[^\s.():]+\(|^created by /",
        "go_frame_2",
    ),
    ("go_frame_2", r"/^\s/", "go_frame_1"),
];

const PYTHON: &[Def] = &[
    (
        "start_state",
        r"/^Traceback \(most recent call last\):$/",
        "python",
    ),
    ("python", r"/^[\t ]+File /", "python_code"),
    ("python_code", r"/[^\t ]/", "python"),
    ("python", r"/^(?:[^\s.():]+\.)*[^\s.():]+:/", "start_state"),
];

const JAVA: &[Def] = &[
    (
        "start_state, java_start_exception",
        r"/(.)(?:Exception|Error|Throwable|V8 errors stack trace)[:\r\n]/",
        "java_after_exception",
    ),
    (
        "java_after_exception",
        r"/^[\t ]*nested exception is:[\t ]*/",
        "java_start_exception",
    ),
    (
        "java_after_exception",
        r"/^[\r\n]*$/",
        "java_after_exception",
    ),
    (
        "java_after_exception, java",
        r"/^[\t ]+(?:eval )?at /",
        "java",
    ),
    // C# nested exception
    (
        "java_after_exception, java",
        r"/^[\t ]+--- End of inner exception stack trace ---$/",
        "java",
    ),
    // C# exception from async code
    (
        "java_after_exception, java",
        r"/^--- End of stack trace from previous (?x:)location where exception was thrown ---$/",
        "java",
    ),
    (
        "java_after_exception, java",
        r"/^[\t ]*(?:Caused by|Suppressed):/",
        "java_after_exception",
    ),
    (
        "java_after_exception, java",
        r"/^[\t ]*... \d+ (?:more|common frames omitted)/",
        "java",
    ),
];

const RUBY: &[Def] = &[
    (
        "start_state, ruby_start_exception",
        r"/^.+:\d+:in\s+.*/",
        "ruby_after_exception",
    ),
    (
        "ruby_after_exception, ruby",
        r"/^\s+from\s+.*:\d+:in\s+.*/",
        "ruby",
    ),
];

/// A rule-based built-in: no line parser, no `key_content` (the text goes to `log`, and
/// Fluent Bit ends every such record with `\n`).
fn regex(name: &str, defs: &[Def]) -> MlParser {
    let defs: Vec<RuleDef> = defs
        .iter()
        .map(|&(from, regex, to)| RuleDef {
            from,
            regex,
            to: Some(to),
        })
        .collect();
    let rules = Rules::build(&defs).expect("built-in rules compile (tested)");
    MlParser {
        name: Arc::from(name),
        kind: Kind::Regex(rules),
        negate: false,
        flush_ms: DEFAULT_FLUSH_MS,
        key_content: None,
        key_pattern: None,
        key_group: None,
        line: LineParser::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_builds_and_is_found_by_any_case() {
        for name in BUILTINS {
            let p = builtin(name).unwrap();
            assert_eq!(&*p.name, *name);
            assert_eq!(p.flush_ms, 4000);
            assert!(Arc::ptr_eq(&p, &builtin(&name.to_uppercase()).unwrap()));
        }
        assert!(builtin("nope").is_none());
    }
}
