//! `format regex`: Fluent Bit's Onigmo patterns (Ruby syntax) run on Rust engines.
//!
//! Fluent Bit compiles `regex` with Onigmo, `ONIG_SYNTAX_RUBY`, UTF-8 (src/flb_regex.c).
//! We translate the pattern into the `regex` crate's syntax, keeping Onigmo's meaning:
//! - only named groups capture when there are any (`(...)` becomes `(?:...)`); a name
//!   may be used twice; captures are reported per name in the order names first appear,
//!   each name's groups together (Onigmo's ordered name table, `onig_foreach_name`);
//! - `\d \w \s \h` are ASCII (Ruby's `ONIG_OPTION_ASCII_RANGE`), `[[:alpha:]]` and `\b`
//!   are Unicode; `^`/`$` are line anchors; `(?m)` is Ruby's dot-all; `\<`, `\>` and
//!   other escaped punctuation are literals; a `{` that starts no interval is literal;
//!   `x{n}?` is an optional `x{n}` and `x{n,m}+` a repeated one;
//! - `/pattern/` and `/pattern/imx` are read as Fluent Bit's `str_to_regex` does.
//!
//! Patterns with look-around, back-references, atomic groups or possessive quantifiers
//! go to `fancy-regex` (a backtracker that hands the plain parts to `regex`); the rest
//! to `regex`, which is linear-time. What neither supports (conditionals, `\g<name>`
//! calls, `\K`, `\X`, the absent operator) is an error at load time.

use std::fmt::Write as _;
use std::sync::Mutex;

use crate::event::Str;

/// A compiled `regex` of a parser.
#[derive(Debug)]
pub struct OnigRegex {
    engine: Engine,
    /// Named groups in Onigmo's report order: (name, capture index in `engine`).
    names: Vec<(Str, usize)>,
    /// Number of capture groups Onigmo would report (`num_regs - 1`).
    groups: usize,
}

#[derive(Debug)]
enum Engine {
    Plain {
        /// For lines without `\n`, where Ruby's line anchors are the text's ends:
        /// the `regex` crate optimises `^...$` much better than `(?m)^...(?m)$`.
        single: Plain,
        /// With `(?m)`, for texts holding newlines; `None` when the pattern has no
        /// `^`/`$`.
        multi: Option<Plain>,
        /// Byte-wise (`(?-u)`), for texts that are not UTF-8: Onigmo reads a byte that
        /// starts no valid sequence as one character, which a Unicode class would not
        /// match. `None` when the pattern needs Unicode (`\p{..}`, POSIX brackets).
        bytes: Option<Plain>,
    },
    Fancy(fancy_regex::Regex),
}

#[derive(Debug)]
struct Plain {
    re: regex::bytes::Regex,
    /// Reusable capture slots, so a match allocates nothing.
    slots: Mutex<Vec<regex::bytes::CaptureLocations>>,
}

impl Plain {
    fn new(pattern: &str) -> Result<Plain, String> {
        let re = regex::bytes::RegexBuilder::new(pattern)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| {
                // The crate's message repeats the pattern over several lines; keep the
                // last line, which says what is wrong.
                let msg = e.to_string();
                msg.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(&msg)
                    .trim()
                    .to_string()
            })?;
        Ok(Plain {
            re,
            slots: Mutex::new(Vec::new()),
        })
    }
}

impl OnigRegex {
    /// Compiles a parser's `regex` value as Fluent Bit does (`/.../opts` included).
    pub fn new(value: &str) -> Result<OnigRegex, String> {
        let (pattern, opts) = split_slashes(value);
        let tr = translate(pattern, opts)?;
        let multi = format!("(?m{}){}", tr.flags, tr.body);
        let engine = if tr.fancy {
            Engine::Fancy(
                fancy_regex::RegexBuilder::new(&multi)
                    .backtrack_limit(10_000_000)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        } else {
            let single = if tr.flags.is_empty() {
                tr.body.clone()
            } else {
                format!("(?{}){}", tr.flags, tr.body)
            };
            Engine::Plain {
                single: Plain::new(&single)?,
                multi: if tr.anchors {
                    Some(Plain::new(&multi)?)
                } else {
                    None
                },
                bytes: Plain::new(&format!("(?-u:(?m{}){})", tr.flags, tr.body)).ok(),
            }
        };
        Ok(OnigRegex {
            engine,
            names: tr
                .names
                .into_iter()
                .map(|(n, i)| (Str::from(n.as_str()), i))
                .collect(),
            groups: tr.groups,
        })
    }

    /// The named groups in report order.
    pub fn names(&self) -> impl Iterator<Item = &Str> {
        self.names.iter().map(|(n, _)| n)
    }

    /// How many capture groups Onigmo counts (0: Fluent Bit never reports a match).
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Whether this pattern needed the backtracking engine.
    pub fn is_fancy(&self) -> bool {
        matches!(self.engine, Engine::Fancy(_))
    }

    /// Searches `input` (leftmost-first, unanchored, like `onig_search`) and calls `f`
    /// with each named group in report order and where it matched (`None`: the group
    /// did not take part). `false` when there is no match.
    pub fn search(&self, input: &[u8], mut f: impl FnMut(&Str, Option<(usize, usize)>)) -> bool {
        self.with_match(input, |group| {
            for (name, i) in &self.names {
                f(name, group(*i));
            }
        })
        .is_some()
    }

    /// Searches `input` like `onig_search` with a region: where the match (0) and each
    /// capture group 1..=`groups()` matched, in Onigmo's numbering (`None`: the group
    /// took no part). `None` when there is no match.
    pub fn captures(&self, input: &[u8]) -> Option<Vec<Option<(usize, usize)>>> {
        self.with_match(input, |group| (0..=self.groups).map(group).collect())
    }

    /// Runs `f` on the first match, given where group `i` matched.
    fn with_match<R>(
        &self,
        input: &[u8],
        f: impl FnOnce(&dyn Fn(usize) -> Option<(usize, usize)>) -> R,
    ) -> Option<R> {
        match &self.engine {
            Engine::Plain {
                single,
                multi,
                bytes,
            } => {
                let plain = match (multi, bytes) {
                    (_, Some(b)) if std::str::from_utf8(input).is_err() => b,
                    (Some(m), _) if memchr::memchr(b'\n', input).is_some() => m,
                    _ => single,
                };
                let mut locs = match plain.slots.lock() {
                    Ok(mut pool) => pool.pop(),
                    Err(_) => None,
                }
                .unwrap_or_else(|| plain.re.capture_locations());
                let found = plain.re.captures_read(&mut locs, input).is_some();
                let out = found.then(|| f(&|i| locs.get(i)));
                if let Ok(mut pool) = plain.slots.lock() {
                    pool.push(locs);
                }
                out
            }
            Engine::Fancy(re) => {
                // fancy-regex needs text; a line that is not UTF-8 does not match.
                let text = std::str::from_utf8(input).ok()?;
                match re.captures(text) {
                    Ok(Some(caps)) => Some(f(&|i| caps.get(i).map(|m| (m.start(), m.end())))),
                    _ => None,
                }
            }
        }
    }

    /// Whether `input` matches anywhere.
    pub fn is_match(&self, input: &[u8]) -> bool {
        match &self.engine {
            Engine::Plain {
                single,
                multi,
                bytes,
            } => match (multi, bytes) {
                (_, Some(b)) if std::str::from_utf8(input).is_err() => b.re.is_match(input),
                (Some(m), _) if memchr::memchr(b'\n', input).is_some() => m.re.is_match(input),
                _ => single.re.is_match(input),
            },
            Engine::Fancy(re) => {
                std::str::from_utf8(input).is_ok_and(|t| re.is_match(t).unwrap_or(false))
            }
        }
    }
}

/// Fluent Bit's `str_to_regex`: `/pat/` loses its slashes; `/pat/opts` (only `m`, `i`,
/// `x`, `o` letters, at least one of the first three) loses them and sets options.
fn split_slashes(value: &str) -> (&str, Opts) {
    let b = value.as_bytes();
    let mut opts = Opts::default();
    let mut new_end = None;
    if b.first() == Some(&b'/') {
        if let Some(last) = value.rfind('/') {
            if last != 0 {
                let tail = &value[last + 1..];
                let mut ok = !tail.is_empty();
                for c in tail.chars() {
                    match c {
                        'm' => opts.dotall = true,
                        'i' => opts.icase = true,
                        'x' => opts.extended = true,
                        'o' => {}
                        _ => ok = false,
                    }
                }
                if ok && (opts.dotall || opts.icase || opts.extended) {
                    new_end = Some(last);
                } else {
                    opts = Opts::default();
                }
            }
        }
    }
    let (mut start, mut end) = (0, b.len());
    if b.len() > 1 && b[0] == b'/' && b[b.len() - 1] == b'/' {
        start += 1;
        end -= 1;
    }
    if let Some(ne) = new_end {
        start += 1;
        end = ne;
    }
    if start > end {
        return ("", opts);
    }
    (&value[start..end], opts)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Opts {
    icase: bool,
    /// Ruby's `m`: `.` matches a newline.
    dotall: bool,
    extended: bool,
}

/// A pattern in the `regex` crate's syntax.
#[derive(Debug)]
struct Translated {
    /// Flags for the whole pattern (`i`, `s`), without Ruby's always-on line anchors.
    flags: String,
    body: String,
    /// Whether the pattern has `^` or `$`.
    anchors: bool,
    names: Vec<(String, usize)>,
    groups: usize,
    fancy: bool,
}

const ASCII_SPACE: &str = r"\t\n\x0B\x0C\r ";

struct Tr<'a> {
    p: &'a [char],
    i: usize,
    out: String,
    /// Whether the pattern has named groups (then plain groups do not capture).
    named: bool,
    /// Capture groups emitted so far.
    groups: usize,
    /// (name, capture index) in the order groups appear.
    defs: Vec<(String, usize)>,
    fancy: bool,
    /// `x` flag per open group (the innermost last).
    extended: Vec<bool>,
    /// Whether `^` or `$` was written (Ruby's line anchors).
    anchors: bool,
}

fn translate(pattern: &str, opts: Opts) -> Result<Translated, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let named = has_named_groups(&chars);
    let mut t = Tr {
        p: &chars,
        i: 0,
        out: String::with_capacity(pattern.len() + 16),
        named,
        groups: 0,
        defs: Vec::new(),
        fancy: false,
        extended: vec![opts.extended],
        anchors: false,
    };
    let mut flags = String::new();
    if opts.icase {
        flags.push('i');
    }
    if opts.dotall {
        flags.push('s');
    }
    t.alternation()?;
    if t.i < t.p.len() {
        return Err("unmatched close parenthesis".to_string());
    }
    // Onigmo's report order: names by first appearance, each name's groups together.
    let mut names: Vec<(String, usize)> = Vec::with_capacity(t.defs.len());
    let mut order: Vec<&str> = Vec::new();
    for (n, _) in &t.defs {
        if !order.contains(&n.as_str()) {
            order.push(n);
        }
    }
    for n in order {
        names.extend(t.defs.iter().filter(|(m, _)| m == n).cloned());
    }
    Ok(Translated {
        flags,
        body: t.out,
        anchors: t.anchors,
        names,
        groups: t.groups,
        fancy: t.fancy,
    })
}

/// Whether `(?<name>` or `(?'name'` occurs outside classes and escapes.
fn has_named_groups(p: &[char]) -> bool {
    let mut i = 0;
    let mut depth = 0;
    while i < p.len() {
        match p[i] {
            '\\' => i += 1,
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            '(' if depth == 0 && p.get(i + 1) == Some(&'?') => {
                let c = p.get(i + 2).copied();
                let d = p.get(i + 3).copied();
                if c == Some('\'') || (c == Some('<') && d != Some('=') && d != Some('!')) {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Tr<'_> {
    fn peek(&self) -> Option<char> {
        self.p.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.p.get(self.i + k).copied()
    }

    fn x(&self) -> bool {
        *self.extended.last().unwrap_or(&false)
    }

    fn lit(&mut self, c: char) {
        push_literal(&mut self.out, c);
    }

    /// alternation := sequence ('|' sequence)*, up to an unmatched `)` or the end.
    fn alternation(&mut self) -> Result<(), String> {
        loop {
            self.sequence()?;
            match self.peek() {
                Some('|') => {
                    self.i += 1;
                    self.out.push('|');
                }
                _ => return Ok(()),
            }
        }
    }

    fn sequence(&mut self) -> Result<(), String> {
        loop {
            if self.x() {
                self.skip_extended();
            }
            let Some(c) = self.peek() else { return Ok(()) };
            if c == '|' || c == ')' {
                return Ok(());
            }
            let start = self.out.len();
            let quantifiable = self.atom()?;
            if quantifiable {
                self.quantifiers(start)?;
            } else if self.x() {
                self.skip_extended();
            }
        }
    }

    /// Whitespace and `#` comments in extended mode.
    fn skip_extended(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.i += 1;
            } else if c == '#' {
                while let Some(c) = self.peek() {
                    self.i += 1;
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    /// One atom; returns whether a quantifier may follow.
    fn atom(&mut self) -> Result<bool, String> {
        let c = self.p[self.i];
        self.i += 1;
        match c {
            '(' => self.group(),
            '[' => {
                self.class()?;
                Ok(true)
            }
            '\\' => self.escape(),
            '.' => {
                self.out.push('.');
                Ok(true)
            }
            '^' | '$' => {
                self.anchors = true;
                self.out.push(c);
                Ok(false)
            }
            '*' | '+' | '?' => Err("target of repeat operator is not specified".to_string()),
            '{' if self.interval_at(self.i - 1).is_some() => {
                Err("target of repeat operator is not specified".to_string())
            }
            c => {
                self.lit(c);
                Ok(true)
            }
        }
    }

    /// `{n}`, `{n,}`, `{n,m}`, `{,m}` at `at`: (min, max, length in chars).
    fn interval_at(&self, at: usize) -> Option<(u32, Option<u32>, usize)> {
        let p = self.p;
        if p.get(at) != Some(&'{') {
            return None;
        }
        let mut i = at + 1;
        let num = |i: &mut usize| -> Option<u32> {
            let s = *i;
            while p.get(*i).is_some_and(|c| c.is_ascii_digit()) {
                *i += 1;
            }
            if *i == s {
                None
            } else {
                p[s..*i].iter().collect::<String>().parse().ok()
            }
        };
        let min = num(&mut i);
        let (min, max) = if p.get(i) == Some(&',') {
            i += 1;
            let max = num(&mut i);
            if min.is_none() && max.is_none() {
                return None;
            }
            (min.unwrap_or(0), max)
        } else {
            (min?, min)
        };
        if p.get(i) != Some(&'}') {
            return None;
        }
        if max.is_some_and(|m| m < min) {
            return None;
        }
        Some((min, max, i + 1 - at))
    }

    /// Quantifiers after the atom that starts at `start` in the output. Onigmo allows
    /// several in a row (`a**`, `x{2}{3}`); Rust wants each level in its own group.
    fn quantifiers(&mut self, start: usize) -> Result<(), String> {
        let mut quantified = false;
        loop {
            if self.x() {
                self.skip_extended();
            }
            let (q, fixed) = match self.peek() {
                Some(c @ ('*' | '+' | '?')) => {
                    self.i += 1;
                    (c.to_string(), false)
                }
                Some('{') => match self.interval_at(self.i) {
                    Some((min, max, len)) => {
                        self.i += len;
                        let q = match max {
                            Some(m) if m == min => format!("{{{min}}}"),
                            Some(m) => format!("{{{min},{m}}}"),
                            None => format!("{{{min},}}"),
                        };
                        (q, max == Some(min))
                    }
                    None => return Ok(()),
                },
                _ => return Ok(()),
            };
            if quantified {
                self.out.insert_str(start, "(?:");
                self.out.push(')');
            }
            quantified = true;
            self.out.push_str(&q);
            match self.peek() {
                // `x{n}?` is an optional `x{n}` in Ruby syntax: leave the `?` to the
                // next round, which wraps.
                Some('?') if fixed => {}
                Some('?') => {
                    self.i += 1;
                    self.out.push('?');
                }
                // Possessive: `*+`, `++`, `?+` (not after an interval: `{n,m}+` repeats).
                Some('+') if !q.starts_with('{') => {
                    self.i += 1;
                    self.out.insert_str(start, "(?>");
                    self.out.push(')');
                    self.fancy = true;
                }
                _ => {}
            }
        }
    }

    fn group(&mut self) -> Result<bool, String> {
        if self.peek() != Some('?') {
            // Plain groups capture only when the pattern has no named ones.
            if self.named {
                self.out.push_str("(?:");
            } else {
                self.groups += 1;
                self.out.push('(');
            }
            return self.group_body(None);
        }
        self.i += 1;
        match self.peek() {
            Some(':') => {
                self.i += 1;
                self.out.push_str("(?:");
                self.group_body(None)
            }
            Some('=') | Some('!') => {
                let c = self.p[self.i];
                self.i += 1;
                self.fancy = true;
                self.out.push_str("(?");
                self.out.push(c);
                self.group_body(None)?;
                Ok(false)
            }
            Some('>') => {
                self.i += 1;
                self.fancy = true;
                self.out.push_str("(?>");
                self.group_body(None)
            }
            Some('<') if matches!(self.peek_at(1), Some('=') | Some('!')) => {
                let c = self.p[self.i + 1];
                self.i += 2;
                self.fancy = true;
                self.out.push_str("(?<");
                self.out.push(c);
                self.group_body(None)?;
                Ok(false)
            }
            Some(open @ ('<' | '\'')) => {
                self.i += 1;
                let close = if open == '<' { '>' } else { '\'' };
                let s = self.i;
                while self.peek().is_some_and(|c| c != close && c != ')') {
                    self.i += 1;
                }
                let name: String = self.p[s..self.i].iter().collect();
                if self.peek() != Some(close) {
                    return Err(format!("invalid group name <{name}>"));
                }
                self.i += 1;
                if name.is_empty() {
                    return Err("group name is empty".to_string());
                }
                if name.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(format!("invalid group name <{name}>"));
                }
                if !name.chars().all(is_word) {
                    return Err(format!("invalid char in group name <{name}>"));
                }
                self.groups += 1;
                self.defs.push((name, self.groups));
                self.out.push('(');
                self.group_body(None)
            }
            Some('#') => {
                while let Some(c) = self.peek() {
                    self.i += 1;
                    if c == ')' {
                        return Ok(false);
                    }
                }
                Err("end pattern in group".to_string())
            }
            Some('~') => Err("the absent operator (?~...) is not supported".to_string()),
            Some('(') => Err("conditional groups (?(cond)...) are not supported".to_string()),
            _ => self.option_group(),
        }
    }

    /// `(?imx-imx)` and `(?imx-imx:...)`; Ruby's `m` is Rust's `s`.
    fn option_group(&mut self) -> Result<bool, String> {
        let mut flags = String::new();
        let mut neg = false;
        let mut ext = self.x();
        loop {
            let Some(c) = self.peek() else {
                return Err("end pattern in group".to_string());
            };
            self.i += 1;
            match c {
                '-' if !neg => {
                    neg = true;
                    flags.push('-');
                }
                'i' => flags.push('i'),
                'm' => flags.push('s'),
                'x' => ext = !neg,
                ':' | ')' => {
                    let flags = flags.trim_end_matches('-');
                    if c == ')' {
                        // Applies to the rest of the enclosing group.
                        if !flags.is_empty() {
                            let _ = write!(self.out, "(?{flags})");
                        }
                        if let Some(x) = self.extended.last_mut() {
                            *x = ext;
                        }
                        return Ok(false);
                    }
                    if flags.is_empty() {
                        self.out.push_str("(?:");
                    } else {
                        let _ = write!(self.out, "(?{flags}:");
                    }
                    return self.group_body(Some(ext));
                }
                'a' | 'u' | 'd' => return Err(format!("option '{c}' in (?{c}) is not supported")),
                _ => return Err("undefined group option".to_string()),
            }
        }
    }

    fn group_body(&mut self, ext: Option<bool>) -> Result<bool, String> {
        let outer = self.x();
        self.extended.push(ext.unwrap_or(outer));
        self.alternation()?;
        self.extended.pop();
        if self.peek() != Some(')') {
            return Err("end pattern with unmatched parenthesis".to_string());
        }
        self.i += 1;
        self.out.push(')');
        Ok(true)
    }

    fn escape(&mut self) -> Result<bool, String> {
        let Some(c) = self.peek() else {
            return Err("end pattern at escape".to_string());
        };
        self.i += 1;
        match c {
            'd' => self.out.push_str("[0-9]"),
            'D' => self.out.push_str("[^0-9]"),
            'w' => self.out.push_str("[0-9A-Za-z_]"),
            'W' => self.out.push_str("[^0-9A-Za-z_]"),
            's' => {
                let _ = write!(self.out, "[{ASCII_SPACE}]");
            }
            'S' => {
                let _ = write!(self.out, "[^{ASCII_SPACE}]");
            }
            'h' => self.out.push_str("[0-9A-Fa-f]"),
            'H' => self.out.push_str("[^0-9A-Fa-f]"),
            'b' | 'B' | 'A' | 'z' => {
                self.out.push('\\');
                self.out.push(c);
                return Ok(false);
            }
            // Searches always start at the beginning of the line.
            'G' => {
                self.out.push_str(r"\A");
                return Ok(false);
            }
            'Z' => {
                self.fancy = true;
                self.out.push_str(r"(?=\n?\z)");
                return Ok(false);
            }
            'R' => {
                self.fancy = true;
                self.out
                    .push_str(r"(?>\r\n|[\n\x0B\x0C\r\x{85}\x{2028}\x{2029}])");
            }
            'p' | 'P' => {
                let prop = self.property(c == 'P')?;
                self.out.push_str(&prop);
            }
            'k' => {
                let n = self.backref_name()?;
                let _ = write!(self.out, "\\{n}");
                self.fancy = true;
            }
            '1'..='9' => {
                if self.named {
                    return Err("numbered backref/call is not allowed. (use name)".to_string());
                }
                let mut n = c.to_digit(10).unwrap_or(0) as usize;
                while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
                    n = n * 10 + d as usize;
                    self.i += 1;
                }
                let _ = write!(self.out, "\\{n}");
                self.fancy = true;
            }
            'g' => return Err(r"subexpression calls (\g<name>) are not supported".to_string()),
            'K' => return Err(r"\K is not supported".to_string()),
            'X' => return Err(r"\X is not supported".to_string()),
            _ => {
                let ch = self.char_escape(c)?;
                self.lit(ch);
            }
        }
        Ok(true)
    }

    /// `\k<name>`: a back-reference to the (single) group of that name.
    fn backref_name(&mut self) -> Result<usize, String> {
        let (open, close) = match self.peek() {
            Some('<') => ('<', '>'),
            Some('\'') => ('\'', '\''),
            _ => return Err("invalid backref name".to_string()),
        };
        let _ = open;
        self.i += 1;
        let s = self.i;
        while self.peek().is_some_and(|c| c != close) {
            self.i += 1;
        }
        let name: String = self.p[s..self.i].iter().collect();
        self.i += 1;
        let found: Vec<usize> = self
            .defs
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|&(_, i)| i)
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("undefined name <{name}> reference")),
            _ => Err(format!(
                "back-references to a name used twice (<{name}>) are not supported"
            )),
        }
    }

    /// `\p{Name}`, `\p{^Name}`, `\P{Name}`.
    fn property(&mut self, negated: bool) -> Result<String, String> {
        if self.peek() != Some('{') {
            return Err("invalid character property name {".to_string());
        }
        self.i += 1;
        let mut neg = negated;
        if self.peek() == Some('^') {
            neg = !neg;
            self.i += 1;
        }
        let s = self.i;
        while self.peek().is_some_and(|c| c != '}') {
            self.i += 1;
        }
        if self.peek() != Some('}') {
            return Err("invalid character property name".to_string());
        }
        let name: String = self.p[s..self.i].iter().collect();
        self.i += 1;
        Ok(format!("\\{}{{{name}}}", if neg { 'P' } else { 'p' }))
    }

    /// Escapes that stand for one character (`\n`, `\x41`, `\u00e9`, `\101`, `\cA`,
    /// an escaped literal).
    fn char_escape(&mut self, c: char) -> Result<char, String> {
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'f' => '\x0c',
            'v' => '\x0b',
            'a' => '\x07',
            'e' => '\x1b',
            'x' => {
                if self.peek() == Some('{') {
                    self.i += 1;
                    let v = self.hex_digits(8);
                    if self.peek() != Some('}') {
                        return Err("invalid code point value".to_string());
                    }
                    self.i += 1;
                    char::from_u32(v.ok_or("invalid code point value")?)
                        .ok_or("invalid code point value")?
                } else {
                    match self.hex_digits(2) {
                        Some(v) => char::from_u32(v).ok_or("invalid code point value")?,
                        None => 'x',
                    }
                }
            }
            'u' => {
                let s = self.i;
                match self.hex_digits(4) {
                    Some(v) if self.i - s == 4 => {
                        char::from_u32(v).ok_or("invalid Unicode code point")?
                    }
                    _ => return Err("invalid Unicode escape".to_string()),
                }
            }
            '0' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && self.peek().is_some_and(|c| ('0'..='7').contains(&c)) {
                    v = v * 8 + self.p[self.i].to_digit(8).unwrap_or(0);
                    self.i += 1;
                    n += 1;
                }
                char::from_u32(v).ok_or("invalid code point value")?
            }
            'c' => {
                let Some(x) = self.peek() else {
                    return Err("end pattern at control".to_string());
                };
                self.i += 1;
                if x == '?' {
                    '\x7f'
                } else {
                    char::from_u32(x as u32 & 0x9f).ok_or("invalid control escape")?
                }
            }
            'C' | 'M' => return Err(format!(r"\{c}- escapes are not supported")),
            other => other,
        })
    }

    fn hex_digits(&mut self, max: usize) -> Option<u32> {
        let s = self.i;
        while self.i - s < max && self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.i += 1;
        }
        if self.i == s {
            return None;
        }
        u32::from_str_radix(&self.p[s..self.i].iter().collect::<String>(), 16).ok()
    }

    /// A character class, after its `[`; Onigmo's nested classes, `&&`, POSIX brackets.
    fn class(&mut self) -> Result<(), String> {
        self.out.push('[');
        if self.peek() == Some('^') {
            self.i += 1;
            self.out.push('^');
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err("premature end of char-class".to_string());
            };
            if c == ']' && !first {
                self.i += 1;
                self.out.push(']');
                return Ok(());
            }
            first = false;
            if c == '&' && self.peek_at(1) == Some('&') {
                self.i += 2;
                self.out.push_str("&&");
                continue;
            }
            if c == '[' {
                if self.peek_at(1) == Some(':') {
                    if let Some(text) = self.posix_bracket()? {
                        self.out.push_str(&text);
                        continue;
                    }
                }
                self.i += 1;
                self.class()?;
                continue;
            }
            // One item, maybe the start of a range.
            let lo = match self.class_item()? {
                ClassItem::Set(text) => {
                    self.out.push_str(&text);
                    continue;
                }
                ClassItem::Char(ch) => ch,
            };
            if self.peek() == Some('-')
                && self.peek_at(1).is_some_and(|c| c != ']')
                && self.peek_at(1) != Some('[')
            {
                let save = self.i;
                self.i += 1;
                match self.class_item()? {
                    ClassItem::Char(hi) => {
                        if hi < lo {
                            return Err("empty range in char class".to_string());
                        }
                        push_class_char(&mut self.out, lo);
                        self.out.push('-');
                        push_class_char(&mut self.out, hi);
                    }
                    ClassItem::Set(_) => {
                        // `[a-\d]`: Onigmo reads the `-` as a literal.
                        self.i = save;
                        push_class_char(&mut self.out, lo);
                    }
                }
            } else {
                push_class_char(&mut self.out, lo);
            }
        }
    }

    fn class_item(&mut self) -> Result<ClassItem, String> {
        let c = self.p[self.i];
        self.i += 1;
        if c != '\\' {
            return Ok(ClassItem::Char(c));
        }
        let Some(e) = self.peek() else {
            return Err("premature end of char-class".to_string());
        };
        self.i += 1;
        Ok(match e {
            'd' => ClassItem::Set("0-9".to_string()),
            'D' => ClassItem::Set("[^0-9]".to_string()),
            'w' => ClassItem::Set("0-9A-Za-z_".to_string()),
            'W' => ClassItem::Set("[^0-9A-Za-z_]".to_string()),
            's' => ClassItem::Set(ASCII_SPACE.to_string()),
            'S' => ClassItem::Set(format!("[^{ASCII_SPACE}]")),
            'h' => ClassItem::Set("0-9A-Fa-f".to_string()),
            'H' => ClassItem::Set("[^0-9A-Fa-f]".to_string()),
            'p' | 'P' => ClassItem::Set(self.property(e == 'P')?),
            'b' => ClassItem::Char('\x08'),
            'R' | 'X' | 'k' | 'g' => return Err(format!("invalid escape \\{e} in char-class")),
            other => ClassItem::Char(self.char_escape(other)?),
        })
    }

    /// `[:name:]` / `[:^name:]` at the cursor (which is on `[`); `None` when it is not
    /// one (then `[` opens a nested class).
    fn posix_bracket(&mut self) -> Result<Option<String>, String> {
        let s = self.i + 2;
        let mut j = s;
        while self
            .p
            .get(j)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == '^')
        {
            j += 1;
        }
        if self.p.get(j) != Some(&':') || self.p.get(j + 1) != Some(&']') {
            return Ok(None);
        }
        let raw: String = self.p[s..j].iter().collect();
        let (neg, name) = match raw.strip_prefix('^') {
            Some(n) => (true, n.to_string()),
            None => (false, raw),
        };
        // Ruby syntax reads POSIX brackets over all of Unicode.
        let set = match name.as_str() {
            "alpha" => r"\p{Alphabetic}",
            "digit" => r"\p{Nd}",
            "alnum" => r"\p{Alphabetic}\p{Nd}",
            "upper" => r"\p{Uppercase}",
            "lower" => r"\p{Lowercase}",
            "space" => r"\p{White_Space}",
            "xdigit" => "0-9A-Fa-f",
            "word" => r"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}",
            "ascii" => r"\x00-\x7F",
            "blank" => r"\p{Zs}\t",
            "cntrl" => r"\p{Cc}",
            "punct" => r"\p{P}$+<=>^`|~",
            _ => return Err(format!("invalid POSIX bracket type [:{name}:]")),
        };
        self.i = j + 2;
        Ok(Some(if neg {
            format!("[^{set}]")
        } else {
            set.to_string()
        }))
    }
}

enum ClassItem {
    Char(char),
    /// Already in Rust class syntax (a range list or a nested class).
    Set(String),
}

fn push_literal(out: &mut String, c: char) {
    if c == ' ' {
        out.push(' ');
    } else if c.is_ascii_punctuation() && regex_syntax_meta(c) {
        out.push('\\');
        out.push(c);
    } else if c.is_control() || c == '\u{85}' {
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    } else {
        out.push(c);
    }
}

fn push_class_char(out: &mut String, c: char) {
    if matches!(c, '[' | ']' | '\\' | '^' | '-' | '&' | '~') {
        out.push('\\');
        out.push(c);
    } else if c.is_control() || c == ' ' || c == '#' {
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    } else {
        out.push(c);
    }
}

/// The characters the `regex` crate treats as syntax outside classes.
fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, captured text or None) per named group, as Onigmo reports them.
    fn run(pattern: &str, input: &str) -> Option<Vec<(String, Option<String>)>> {
        let re = OnigRegex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let mut got = Vec::new();
        if !re.search(input.as_bytes(), |n, s| {
            got.push((n.to_string(), s.map(|(a, b)| input[a..b].to_string())))
        }) {
            return None;
        }
        Some(got)
    }

    fn one(pattern: &str, input: &str) -> Option<String> {
        run(pattern, input).and_then(|v| v[0].1.clone())
    }

    // Expected values below were produced by Fluent Bit's Onigmo (lib/onigmo, Ruby
    // syntax, UTF-8) on the same pattern and input.

    #[test]
    fn names_in_first_appearance_order_with_duplicates_together() {
        let got = run("(?<b>x)(?<a>y)(?<b>z)?", "xy").unwrap();
        let want = [("b", Some("x")), ("b", None), ("a", Some("y"))];
        assert_eq!(
            got,
            want.iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn ruby_escapes_and_classes() {
        assert_eq!(one(r"^\<(?<a>\d+)\>$", "<12>").as_deref(), Some("12"));
        assert_eq!(one(r"(?<a>\d+)", "٣٣12").as_deref(), Some("12"));
        assert_eq!(one(r"(?<a>\w+)", "éab").as_deref(), Some("ab"));
        assert_eq!(one(r"(?<a>\s)", "\u{a0} ").as_deref(), Some(" "));
        assert_eq!(one(r"(?<a>\h+)", "xAf9g").as_deref(), Some("Af9"));
        assert_eq!(one("(?<a>[[:alpha:]]+)", "1éa").as_deref(), Some("éa"));
        assert_eq!(
            one("(?<a>[[:alpha:][:digit:]]+)", "-xxxa-").as_deref(),
            Some("xxxa")
        );
        assert_eq!(one(r"(?<a>[]a]+)", "xxxa-b]").as_deref(), Some("a"));
        assert_eq!(one(r"(?<a>[a-]+)", "xxxa-b").as_deref(), Some("a-"));
        assert_eq!(one(r"(?<a>[\w-]+)", "xxxa-b]~").as_deref(), Some("xxxa-b"));
        assert_eq!(one(r"(?<a>[a&&[^b]]+)", "xxxa-b").as_deref(), Some("a"));
        assert_eq!(one(r"(?<a>\p{^Alpha}+)", "xxxa-b").as_deref(), Some("-"));
        assert_eq!(one(r"(?<a>\y)", "xxxa-b"), None);
        assert_eq!(
            one(r#"(?<a>\"[^\"]*\")"#, r#"x "q" y"#).as_deref(),
            Some(r#""q""#)
        );
    }

    #[test]
    fn anchors_are_per_line_and_m_is_dotall() {
        assert_eq!(one("^(?<a>.*)$", "abc\ndef").as_deref(), Some("abc"));
        assert_eq!(one("^(?<a>def)$", "abc\ndef").as_deref(), Some("def"));
        assert_eq!(
            one("/^(?<a>.*)$/m", "abc\ndef").as_deref(),
            Some("abc\ndef")
        );
        assert_eq!(one("(?m:(?<a>b.d))", "ab\ndc").as_deref(), Some("b\nd"));
        assert_eq!(one("/(?<a>ABC)/i", "xabc").as_deref(), Some("abc"));
        assert_eq!(
            one("/(?<a> a b # comment\n )/x", "ab").as_deref(),
            Some("ab")
        );
    }

    #[test]
    fn intervals_and_quantifiers() {
        assert_eq!(one("(?<a>x{,2})", "xxxa").as_deref(), Some("xx"));
        assert_eq!(one("(?<a>x{2}+)", "xxxa").as_deref(), Some("xx"));
        assert_eq!(one("(?<a>a{2}?)", "aaa").as_deref(), Some("aa"));
        assert_eq!(one("(?<a>x{1,2}{2})", "xxxa").as_deref(), Some("xxx"));
        assert_eq!(one("(?<a>a**)", "xxxa").as_deref(), Some(""));
        assert_eq!(one("(?<a>x*+)", "xxxa").as_deref(), Some("xxx"));
        assert_eq!(
            one(r#"(?<log>^{"log":"\d{4}.*)"#, r#"{"log":"2024-01"}"#).as_deref(),
            Some(r#"{"log":"2024-01"}"#)
        );
        assert_eq!(one("(?<a>x{a})", "x{a}").as_deref(), Some("x{a}"));
    }

    #[test]
    fn text_that_is_not_utf8_is_matched_byte_by_byte_like_onigmo() {
        // Onigmo reads an invalid byte as one character.
        let re = OnigRegex::new(r"^(?<a>[^ ]*) (?<b>.*)$").unwrap();
        let mut got = Vec::new();
        assert!(re.search(b"caf\xe9 au lait", |n, s| got.push((n.to_string(), s))));
        assert_eq!(
            got,
            vec![
                ("a".to_string(), Some((0, 4))),
                ("b".to_string(), Some((5, 12)))
            ]
        );
        let re = OnigRegex::new(r"(?<a>\w+)").unwrap();
        let mut got = Vec::new();
        assert!(re.search(b"\xe9t\xe9x", |_, s| got.push(s)));
        assert_eq!(got, vec![Some((1, 2))]);
    }

    #[test]
    fn plain_groups_capture_only_without_names() {
        let re = OnigRegex::new("(?<a>x)(y)").unwrap();
        assert_eq!(re.groups(), 1);
        let re = OnigRegex::new("(x)(y)").unwrap();
        assert_eq!((re.groups(), re.names().count()), (2, 0));
    }

    #[test]
    fn captures_are_numbered_as_onigmo_numbers_them() {
        let re = OnigRegex::new("^(a)(x)?(c)").unwrap();
        assert_eq!(
            re.captures(b"acd"),
            Some(vec![Some((0, 2)), Some((0, 1)), None, Some((1, 2))])
        );
        assert_eq!(re.captures(b"zz"), None);
        // With named groups only those capture, in the order written.
        let re = OnigRegex::new("(?<b>x)(y)(?<a>z)").unwrap();
        assert_eq!(
            re.captures(b"xyz"),
            Some(vec![Some((0, 3)), Some((0, 1)), Some((2, 3))])
        );
        let re = OnigRegex::new(r"(?=x)(x)\1").unwrap();
        assert!(re.is_fancy());
        assert_eq!(re.captures(b"xx"), Some(vec![Some((0, 2)), Some((0, 1))]));
    }

    #[test]
    fn backtracking_features_use_fancy_regex() {
        let re = OnigRegex::new(r"^(?!\[\d{4})(?<a>.*)").unwrap();
        assert!(re.is_fancy());
        assert_eq!(
            one(r"^(?!\[\d{4})(?<a>.*)", "hello").as_deref(),
            Some("hello")
        );
        assert_eq!(one(r"^(?!\[\d{4})(?<a>.*)", "[2024] x"), None);
        assert_eq!(one(r"(?<a>.)\k<a>", "abccd").as_deref(), Some("c"));
        assert_eq!(one(r"(?<a>\Gx)", "xx").as_deref(), Some("x"));
        assert_eq!(one(r"(?<a>b\Z)", "ab\n").as_deref(), Some("b"));
        assert!(!OnigRegex::new("(?<a>x)").unwrap().is_fancy());
    }

    #[test]
    fn slashes_and_options_as_fluent_bit_reads_them() {
        assert_eq!(split_slashes("/abc/"), ("abc", Opts::default()));
        assert_eq!(split_slashes("/abc/i").0, "abc");
        assert!(split_slashes("/abc/i").1.icase);
        assert_eq!(split_slashes("/var/log/(?<x>.*)").0, "/var/log/(?<x>.*)");
        // A path that looks like options is read as options, as in Fluent Bit.
        assert_eq!(split_slashes("/api/v1/mix").0, "api/v1");
        assert_eq!(split_slashes("/").0, "/");
        assert_eq!(split_slashes("//").0, "");
    }

    #[test]
    fn errors_carry_onigmo_like_messages() {
        for (p, msg) in [
            ("(?<a>x", "end pattern with unmatched parenthesis"),
            ("(?<a>x))", "unmatched close parenthesis"),
            ("(?<a.b>x)", "invalid char in group name <a.b>"),
            ("(?<1a>x)", "invalid group name <1a>"),
            ("(?P<a>x)", "undefined group option"),
            (
                r"(?<a>x)\1",
                "numbered backref/call is not allowed. (use name)",
            ),
            ("*a", "target of repeat operator is not specified"),
            ("(?<a>[a", "premature end of char-class"),
        ] {
            assert_eq!(OnigRegex::new(p).unwrap_err(), msg, "{p}");
        }
        assert!(OnigRegex::new("(?<a>[z-a])").is_err());
        assert!(OnigRegex::new(r"(?<a>\p{NoSuchProperty})").is_err());
    }
}
