//! Tag matching: `Match` (only `*` is special, case-sensitive, whole tag) and
//! `Match_Regex` (anchored at the start only). Fluent Bit: src/flb_router.c

use regex::Regex;

/// What an output or filter instance accepts.
#[derive(Clone, Debug)]
pub struct Matcher {
    glob: Option<String>,
    regex: Option<Regex>,
}

impl Matcher {
    /// `None` when neither is set. `regex` must already be valid.
    pub fn new(glob: Option<&str>, regex: Option<&str>) -> Result<Option<Matcher>, regex::Error> {
        let regex = regex
            .map(|r| Regex::new(&format!("^(?:{r})")))
            .transpose()?;
        if glob.is_none() && regex.is_none() {
            return Ok(None);
        }
        Ok(Some(Matcher {
            glob: glob.map(str::to_string),
            regex,
        }))
    }

    /// Fluent Bit matches if either rule matches (the regex is checked first); a
    /// zero-length regex match counts as no match.
    pub fn matches(&self, tag: &str) -> bool {
        if let Some(re) = &self.regex {
            if re.find(tag).is_some_and(|m| m.end() > 0) {
                return true;
            }
        }
        self.glob
            .as_deref()
            .is_some_and(|g| glob_match(g.as_bytes(), tag.as_bytes()))
    }
}

/// `*` matches any sequence (including empty and dots); everything else is literal.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            while p < pattern.len() && pattern[p] == b'*' {
                p += 1;
            }
            star = Some((p, t));
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, t: &str) -> bool {
        glob_match(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn globs() {
        assert!(g("*", "random.0"));
        assert!(g("*", ""));
        assert!(g("random.*", "random.0"));
        assert!(g("random.*", "random."));
        assert!(!g("random.*", "random"));
        assert!(g("kube.*.log", "kube.a.b.log"));
        assert!(g("a**b", "ab"));
        assert!(!g("Random.0", "random.0"), "case-sensitive");
        assert!(!g("random.?", "random.0"), "? is literal");
        assert!(g("random.?", "random.?"));
        assert!(!g("random", "random.0"), "whole tag");
    }

    #[test]
    fn regex_is_anchored_at_start_only() {
        let m = Matcher::new(None, Some("rand")).unwrap().unwrap();
        assert!(m.matches("random.0"));
        assert!(!m.matches("xrandom"));
        let m = Matcher::new(None, Some("rand$")).unwrap().unwrap();
        assert!(!m.matches("random"));
        let m = Matcher::new(None, Some("x*")).unwrap().unwrap();
        assert!(!m.matches("abc"), "zero-length match is no match");
        let m = Matcher::new(Some("a.*"), Some("^zzz")).unwrap().unwrap();
        assert!(m.matches("a.b"), "either rule");
        assert!(Matcher::new(None, None).unwrap().is_none());
        assert!(Matcher::new(None, Some("(")).is_err());
    }
}
