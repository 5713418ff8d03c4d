//! Fluent Bit's regular expressions (Onigmo, Ruby syntax, `/pattern/imx` options) for
//! the `regex` crate.
//!
//! Fluent Bit compiles rule patterns with `flb_regex_create` (src/flb_regex.c): an
//! optional `/.../` wrapper with `m` (dot matches newline), `i`, `x` options, Ruby syntax
//! with Onigmo's ASCII ranges (`\d`, `\w`, `\s` are ASCII only), `^`/`$` at every line.
//! The translation keeps that meaning; what the `regex` crate cannot do (look-around,
//! back-references, atomic groups, possessive repeats) is an error naming the feature.

use regex::bytes::{Regex, RegexBuilder};

/// Options of a `/pattern/opts` literal.
#[derive(Clone, Copy, Debug, Default)]
struct Opts {
    /// `m`: `.` matches a newline too (Rust's `s`).
    dotall: bool,
    ignore_case: bool,
    extended: bool,
}

/// Compiles a Fluent Bit regex for matching bytes.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    let (body, opts) = split_options(pattern);
    let translated = translate(body, opts)?;
    RegexBuilder::new(&translated).build().map_err(|e| match e {
        regex::Error::Syntax(s) => s.lines().last().unwrap_or_default().trim().to_string(),
        other => other.to_string(),
    })
}

/// `str_to_regex` + `check_option`: strip `/.../` and read trailing options. Unknown
/// option letters make the whole text a plain pattern, as in Fluent Bit.
fn split_options(p: &str) -> (&str, Opts) {
    let b = p.as_bytes();
    let mut opts = Opts::default();
    let mut new_end = None;
    if b.first() == Some(&b'/') {
        if let Some(last) = p.rfind('/').filter(|&l| l != 0) {
            let mut o = Opts::default();
            let mut any = false;
            let mut ok = true;
            for &c in &b[last + 1..] {
                match c {
                    b'm' => (o.dotall, any) = (true, true),
                    b'i' => (o.ignore_case, any) = (true, true),
                    b'x' => (o.extended, any) = (true, true),
                    b'o' => {}
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && any {
                opts = o;
                new_end = Some(last);
            }
        }
    }
    let (mut start, mut end) = (0, b.len());
    if b.len() > 1 && b[0] == b'/' && b[b.len() - 1] == b'/' {
        start = 1;
        end -= 1;
    }
    if let Some(ne) = new_end {
        start += 1;
        end = ne;
    }
    (&p[start..end], opts)
}

const DIGIT: &str = "0-9";
const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = r"\t\n\x0B\x0C\r\x20";
const XDIGIT: &str = "0-9a-fA-F";

fn unsupported(what: &str) -> String {
    format!("{what} are not supported (agent uses the Rust regex engine, not Onigmo)")
}

/// Rewrites Ruby syntax into the `regex` crate's.
fn translate(src: &str, opts: Opts) -> Result<String, String> {
    let mut out = String::with_capacity(src.len() + 24);
    out.push_str("(?m");
    if opts.dotall {
        out.push('s');
    }
    if opts.ignore_case {
        out.push('i');
    }
    if opts.extended {
        out.push('x');
    }
    out.push(')');
    let c: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut depth = 0usize; // nesting of character classes
    let mut after_repeat = false;
    while i < c.len() {
        let ch = c[i];
        let was_repeat = after_repeat;
        after_repeat = false;
        if depth > 0 {
            match ch {
                '\\' => i = escape(&c, i, true, &mut out)?,
                '[' if c.get(i + 1) == Some(&':') => {
                    // POSIX bracket `[:alpha:]`, copied up to its `:]`.
                    let close = (i + 2..c.len().saturating_sub(1))
                        .find(|&j| c[j] == ':' && c[j + 1] == ']')
                        .ok_or("unterminated POSIX bracket")?;
                    out.extend(&c[i..close + 2]);
                    i = close + 2;
                }
                '[' => {
                    i = open_class(&c, i, &mut out);
                    depth += 1;
                }
                ']' => {
                    out.push(']');
                    depth -= 1;
                    i += 1;
                }
                _ => {
                    out.push(ch);
                    i += 1;
                }
            }
            continue;
        }
        match ch {
            '\\' => i = escape(&c, i, false, &mut out)?,
            '[' => {
                i = open_class(&c, i, &mut out);
                depth += 1;
            }
            ']' => {
                out.push_str(r"\]");
                i += 1;
            }
            '(' if c.get(i + 1) == Some(&'?') => i = group(&c, i, &mut out)?,
            '{' => match interval(&c, i) {
                Some((text, next)) => {
                    out.push_str(&text);
                    i = next;
                    after_repeat = true;
                }
                None => {
                    out.push_str(r"\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str(r"\}");
                i += 1;
            }
            '*' | '+' | '?' => {
                if ch == '+' && was_repeat {
                    return Err(unsupported("possessive repeats (`*+`, `++`, `?+`)"));
                }
                out.push(ch);
                i += 1;
                // `+?`, `*?`, `??` are lazy repeats; what follows them is not a repeat.
                if c.get(i) == Some(&'?') {
                    out.push('?');
                    i += 1;
                } else {
                    after_repeat = true;
                }
            }
            '#' if opts.extended => {
                // A comment to the end of the line: copy it untouched.
                let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
                out.extend(&c[i..end]);
                i = end;
            }
            _ => {
                out.push(ch);
                i += 1;
            }
        }
    }
    if depth > 0 {
        return Err("premature end of char-class".to_string());
    }
    Ok(out)
}

/// `[`, `[^`, and a `]` right after them, which Onigmo reads as a literal.
fn open_class(c: &[char], mut i: usize, out: &mut String) -> usize {
    out.push('[');
    i += 1;
    if c.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    if c.get(i) == Some(&']') {
        out.push_str(r"\]");
        i += 1;
    }
    i
}

/// `(?...` constructs.
fn group(c: &[char], i: usize, out: &mut String) -> Result<usize, String> {
    let at = |k: usize| c.get(i + k).copied();
    match at(2) {
        Some(':') => {
            out.push_str("(?:");
            Ok(i + 3)
        }
        Some('=') | Some('!') => Err(unsupported("look-ahead groups (`(?=`, `(?!`)")),
        Some('<') if matches!(at(3), Some('=') | Some('!')) => {
            Err(unsupported("look-behind groups (`(?<=`, `(?<!`)"))
        }
        Some('<') | Some('\'') => {
            let close = if at(2) == Some('<') { '>' } else { '\'' };
            let end = (i + 3..c.len())
                .find(|&j| c[j] == close)
                .ok_or("invalid group name")?;
            out.push_str("(?<");
            out.extend(&c[i + 3..end]);
            out.push('>');
            Ok(end + 1)
        }
        Some('>') => Err(unsupported("atomic groups (`(?>`)")),
        Some('~') => Err(unsupported("absent operators (`(?~`)")),
        Some('(') => Err(unsupported("conditional groups (`(?(`)")),
        Some('#') => {
            let end = (i + 3..c.len())
                .find(|&j| c[j] == ')')
                .ok_or("end pattern in group")?;
            Ok(end + 1)
        }
        _ => {
            // Option letters `(?imx-imx)` or `(?imx-imx:...)`; Ruby's `m` is Rust's `s`.
            let mut j = i + 2;
            let mut flags = String::new();
            while let Some(&f) = c.get(j) {
                match f {
                    'i' | 'x' | '-' => flags.push(f),
                    'm' => flags.push('s'),
                    ':' | ')' => break,
                    _ => return Err(format!("undefined group option `{f}`")),
                }
                j += 1;
            }
            let end = *c.get(j).ok_or("end pattern in group")?;
            out.push_str("(?");
            out.push_str(&flags);
            out.push(end);
            Ok(j + 1)
        }
    }
}

/// `{n}`, `{n,}`, `{n,m}` and Ruby's `{,m}`; anything else is a literal `{`.
fn interval(c: &[char], i: usize) -> Option<(String, usize)> {
    let end = (i + 1..c.len()).find(|&j| c[j] == '}')?;
    let inner: String = c[i + 1..end].iter().collect();
    let (lo, hi) = match inner.split_once(',') {
        Some((lo, hi)) => (lo, Some(hi)),
        None => (inner.as_str(), None),
    };
    let digits = |s: &str| s.chars().all(|d| d.is_ascii_digit());
    if !digits(lo) || !hi.is_none_or(digits) || (lo.is_empty() && hi.is_none_or(str::is_empty)) {
        return None;
    }
    let lo = if lo.is_empty() { "0" } else { lo };
    let text = match hi {
        Some(hi) => format!("{{{lo},{hi}}}"),
        None => format!("{{{lo}}}"),
    };
    Some((text, end + 1))
}

/// One `\x` escape at `c[i]`; returns the index after it.
fn escape(c: &[char], i: usize, in_class: bool, out: &mut String) -> Result<usize, String> {
    let Some(&e) = c.get(i + 1) else {
        return Err("end pattern at escape".to_string());
    };
    let mut class = |set: &str, negated: bool| {
        if in_class && !negated {
            out.push_str(set);
        } else {
            out.push_str(if negated { "[^" } else { "[" });
            out.push_str(set);
            out.push(']');
        }
    };
    match e {
        'd' => class(DIGIT, false),
        'D' => class(DIGIT, true),
        'w' => class(WORD, false),
        'W' => class(WORD, true),
        's' => class(SPACE, false),
        'S' => class(SPACE, true),
        'h' => class(XDIGIT, false),
        'H' => class(XDIGIT, true),
        'b' if in_class => out.push_str(r"\x08"),
        'A' | 'z' | 'b' | 'B' | 'n' | 't' | 'r' | 'f' | 'v' | 'a' => {
            out.push('\\');
            out.push(e);
        }
        // `\Z`: end, or before a final newline. Equivalent for matching.
        'Z' => out.push_str(r"(?:\n?\z)"),
        'e' => out.push_str(r"\x1B"),
        'x' => {
            if c.get(i + 2) == Some(&'{') {
                let end = (i + 3..c.len())
                    .find(|&j| c[j] == '}')
                    .ok_or("invalid code point value")?;
                out.extend(&c[i..=end]);
                return Ok(end + 1);
            }
            let n = (i + 2..c.len().min(i + 4))
                .take_while(|&j| c[j].is_ascii_hexdigit())
                .count();
            let hex: String = c[i + 2..i + 2 + n].iter().collect();
            out.push_str(&format!(
                r"\x{{{}}}",
                if hex.is_empty() { "0" } else { &hex }
            ));
            return Ok(i + 2 + n);
        }
        'u' => {
            let hex: String = c
                .get(i + 2..i + 6)
                .ok_or("invalid Unicode escape")?
                .iter()
                .collect();
            if !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                return Err("invalid Unicode escape".to_string());
            }
            out.push_str(&format!(r"\x{{{hex}}}"));
            return Ok(i + 6);
        }
        '0' => {
            let n = (i + 2..c.len().min(i + 4))
                .take_while(|&j| ('0'..='7').contains(&c[j]))
                .count();
            let oct: String = c[i + 1..i + 2 + n].iter().collect();
            let v = u32::from_str_radix(&oct, 8).map_err(|e| e.to_string())?;
            out.push_str(&format!(r"\x{{{v:X}}}"));
            return Ok(i + 2 + n);
        }
        '1'..='9' | 'k' => return Err(unsupported("back-references (`\\1`, `\\k<name>`)")),
        'g' => return Err(unsupported("subexpression calls (`\\g<name>`)")),
        'G' | 'K' | 'R' | 'X' | 'C' | 'M' | 'c' => {
            return Err(unsupported(&format!("`\\{e}` escapes")));
        }
        'p' | 'P' => {
            // `\p{Alpha}`, `\p{^Alpha}` (negated), `\pL`.
            if c.get(i + 2) == Some(&'{') {
                let end = (i + 3..c.len())
                    .find(|&j| c[j] == '}')
                    .ok_or("invalid character property")?;
                let mut name: String = c[i + 3..end].iter().collect();
                let mut neg = e == 'P';
                if let Some(rest) = name.strip_prefix('^') {
                    neg = !neg;
                    name = rest.to_string();
                }
                out.push_str(if neg { r"\P{" } else { r"\p{" });
                out.push_str(&name);
                out.push('}');
                return Ok(end + 1);
            }
            out.extend(&c[i..(i + 3).min(c.len())]);
            return Ok((i + 3).min(c.len()));
        }
        _ if e.is_ascii_alphanumeric() => out.push(e), // Onigmo: unknown escape = the letter
        _ if e.is_ascii_punctuation() => {
            out.push('\\');
            out.push(e);
        }
        _ => out.push_str(&format!(r"\x{{{:X}}}", e as u32)),
    }
    Ok(i + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        compile(p).unwrap().is_match(s.as_bytes())
    }

    #[test]
    fn slashes_and_options() {
        assert_eq!(split_options("/abc/").0, "abc");
        assert_eq!(split_options("abc").0, "abc");
        assert_eq!(split_options("/a/b/").0, "a/b");
        let (body, o) = split_options("/abc/i");
        assert_eq!(body, "abc");
        assert!(o.ignore_case);
        // Unknown option letters: the whole text is the pattern.
        assert_eq!(split_options("/a/q").0, "/a/q");
        assert!(m("/ABC/i", "xabcx"));
        assert!(!m("/ABC/", "abc"));
        assert!(m("/a.b/m", "a\nb"));
        assert!(!m("/a.b/", "a\nb"));
    }

    #[test]
    fn ruby_semantics() {
        // ^ and $ are line anchors in Ruby.
        assert!(m("^b$", "a\nb\nc"));
        // ASCII classes.
        assert!(!m(r"^\d$", "٣"));
        assert!(m(r"^\h+$", "0aF"));
        assert!(m(r"^[\d\s]+$", "1 2\t3"));
        assert!(!m(r"^\S+$", "a b"));
        assert!(m(r"^\W$", "-"));
        // Superfluous escapes as written in Fluent Bit configs.
        assert!(m(r"(\d+\:\d+\:\d+)", "12:34:56"));
        assert!(m(r"^\/var\/log", "/var/log"));
        // Intervals, `{,n}`, a literal `{`.
        assert!(m(r"^a{,2}$", "aa"));
        assert!(m(r#"^{"log":"#, r#"{"log":"x"}"#));
        assert!(m(r"^x{2}y{1,}$", "xxyy"));
        // Named groups both ways, comments, Ruby's `m` flag inside groups.
        assert!(m(r"(?<a>x)(?'b'y)(?#note)", "xy"));
        assert!(m(r"(?m:a.b)", "a\nb"));
        assert!(m(r"\p{^Alpha}", "1"));
        assert!(m(r"[]a]", "]"));
        assert!(m(r"\Z", "x\n"));
        assert!(m(r"[[:alpha:]]+", "abc"));
    }

    #[test]
    fn builtin_patterns_compile() {
        for p in [
            r"/(.)(?:Exception|Error|Throwable|V8 errors stack trace)[:\r\n]/",
            r"/^--- End of stack trace from previous (?x:)location where exception was thrown ---$/",
            r"/^[\t ]*... \d+ (?:more|common frames omitted)/",
            r"/^(?:[^\s.:]+\.)*[^\s.():]+\(|^created by /",
            r"/^goroutine \d+ \[[^\]]+\]:$/",
            r"/\bpanic: /",
        ] {
            compile(p).unwrap();
        }
        assert!(m(
            r"/^--- End of stack trace from previous (?x:)location where exception was thrown ---$/",
            "--- End of stack trace from previous location where exception was thrown ---"
        ));
    }

    #[test]
    fn unsupported_features_are_named() {
        for (p, what) in [
            ("a(?=b)", "look-ahead"),
            ("(?<!a)b", "look-behind"),
            (r"(a)\1", "back-references"),
            ("(?>a)", "atomic"),
            ("a++", "possessive"),
        ] {
            let e = compile(p).unwrap_err();
            assert!(e.contains(what), "{p}: {e}");
        }
        assert!(compile("a+?").is_ok());
        assert!(compile("(unclosed").is_err());
        assert!(compile("[a-").is_err());
    }
}
