//! `types key:integer key2:bool ...`: casts of parsed text values, as Fluent Bit's
//! `flb_parser_typecast` does them with C's `atoll`, `strtoull(.., 16)` and `atof`
//! (leading text that reads as a number is used, the rest ignored; no number is 0).
//! A value that does not cast (`bool` other than `true...`/`false...`) is kept as a
//! string, with Fluent Bit's warning.

use std::sync::Arc;

use crate::event::Value;

/// One cast of `types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Integer,
    Hex,
    Float,
    Bool,
    String,
}

/// The `types` value: `key:type` words separated by spaces. Words without `:` count
/// (they switch a parser to the casting path) but cast nothing; unknown type names
/// mean `string`.
#[derive(Debug, Clone, Default)]
pub struct Types {
    entries: Vec<(String, Type)>,
    /// Whether `types` was set (Fluent Bit's `types_len != 0`).
    set: bool,
}

impl Types {
    pub fn parse(value: &str) -> Types {
        let mut entries = Vec::new();
        let mut words = 0;
        for word in value.split(' ').filter(|w| !w.is_empty()) {
            words += 1;
            let Some((key, ty)) = word.split_once(':') else {
                continue;
            };
            let ty = match ty.to_ascii_lowercase().as_str() {
                "integer" => Type::Integer,
                "bool" => Type::Bool,
                "float" => Type::Float,
                "hex" => Type::Hex,
                _ => Type::String,
            };
            entries.push((key.to_string(), ty));
        }
        Types {
            entries,
            set: words > 0,
        }
    }

    /// Whether values go through [`Types::cast`] (Fluent Bit casts, and packs plain
    /// strings, for every key once `types` is set).
    pub fn is_set(&self) -> bool {
        self.set
    }

    /// The value of `key` (raw text `val`) with its cast applied.
    pub fn cast(&self, key: &str, val: &[u8]) -> Value {
        let Some(&(_, ty)) = self.entries.iter().find(|(k, _)| k == key) else {
            return text_value(val);
        };
        match ty {
            Type::Integer => Value::Int(atoll(val)),
            Type::Hex => Value::UInt(strtoull16(val)),
            Type::Float => Value::Float(atof(val)),
            Type::Bool => {
                if val.len() >= 4 && val[..4].eq_ignore_ascii_case(b"true") {
                    Value::Bool(true)
                } else if val.len() >= 5 && val[..5].eq_ignore_ascii_case(b"false") {
                    Value::Bool(false)
                } else {
                    crate::warn!("[PARSER] key={key} cast error. save as string.");
                    text_value(val)
                }
            }
            Type::String => text_value(val),
        }
    }
}

/// A string value: `Str` when the bytes are UTF-8, else `Bin` (as `tail` does).
pub fn text_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::Str(Arc::from(s)),
        Err(_) => Value::Bin(Arc::from(b)),
    }
}

/// C strings end at their first NUL.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

fn skip_c_space(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|&&c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .count();
    &b[n..]
}

/// `atoll` (glibc: `strtoll`, saturating on overflow).
pub fn atoll(b: &[u8]) -> i64 {
    let b = skip_c_space(c_str(b));
    let (neg, b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut v: i128 = 0;
    for &c in b.iter().take_while(|c| c.is_ascii_digit()) {
        v = (v * 10 + (c - b'0') as i128).min(1 << 64);
    }
    let v = if neg { -v } else { v };
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// `strtoull(s, NULL, 16)`: optional sign and `0x`, saturating, `-` negates mod 2^64.
pub fn strtoull16(b: &[u8]) -> u64 {
    let b = skip_c_space(c_str(b));
    let (neg, mut b) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if b.len() > 2 && b[0] == b'0' && (b[1] | 0x20) == b'x' && b[2].is_ascii_hexdigit() {
        b = &b[2..];
    }
    let mut v: u64 = 0;
    let mut overflow = false;
    for &c in b.iter().take_while(|c| c.is_ascii_hexdigit()) {
        let d = (c as char).to_digit(16).unwrap_or(0) as u64;
        match v.checked_mul(16).and_then(|x| x.checked_add(d)) {
            Some(x) => v = x,
            None => overflow = true,
        }
    }
    if overflow {
        return u64::MAX;
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// `atof` (`strtod`): the longest prefix that reads as a decimal or hexadecimal
/// number, `inf`/`infinity` or `nan`; 0 when there is none.
pub fn atof(b: &[u8]) -> f64 {
    let b = skip_c_space(c_str(b));
    let (neg, rest) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let v = strtod_unsigned(rest);
    if neg {
        -v
    } else {
        v
    }
}

fn strtod_unsigned(b: &[u8]) -> f64 {
    let lower = |n: usize| b.get(..n).map(|p| p.to_ascii_lowercase());
    if lower(3).as_deref() == Some(b"inf") {
        return f64::INFINITY;
    }
    if lower(3).as_deref() == Some(b"nan") {
        return f64::NAN;
    }
    if b.len() > 2
        && b[0] == b'0'
        && (b[1] | 0x20) == b'x'
        && (b[2].is_ascii_hexdigit()
            || (b[2] == b'.' && b.get(3).is_some_and(u8::is_ascii_hexdigit)))
    {
        return hex_float(&b[2..]);
    }
    let digits = |from: usize| {
        b[from.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let int_digits = digits(0);
    let mut i = int_digits;
    if b.get(i) == Some(&b'.') {
        let frac_digits = digits(i + 1);
        if int_digits + frac_digits == 0 {
            return 0.0;
        }
        i += 1 + frac_digits;
    } else if int_digits == 0 {
        return 0.0;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = matches!(b.get(i + 1), Some(b'+' | b'-')) as usize;
        let exp_digits = digits(i + 1 + sign);
        if exp_digits > 0 {
            i += 1 + sign + exp_digits;
        }
    }
    let text = std::str::from_utf8(&b[..i]).unwrap_or("0");
    text.parse().unwrap_or(0.0)
}

/// The digits of a C hex float after `0x`: `1.8p3`.
fn hex_float(b: &[u8]) -> f64 {
    let mut v = 0f64;
    let mut i = 0;
    let mut scale = 0i32;
    while let Some(d) = b.get(i).and_then(|c| (*c as char).to_digit(16)) {
        v = v * 16.0 + d as f64;
        i += 1;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while let Some(d) = b.get(i).and_then(|c| (*c as char).to_digit(16)) {
            v = v * 16.0 + d as f64;
            scale -= 4;
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'p' | b'P')) {
        let mut j = i + 1;
        let neg = b.get(j) == Some(&b'-');
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let start = j;
        let mut e = 0i32;
        while let Some(d) = b.get(j).filter(|c| c.is_ascii_digit()) {
            e = e.saturating_mul(10).saturating_add((d - b'0') as i32);
            j += 1;
        }
        if j > start {
            scale = scale.saturating_add(if neg { -e } else { e });
        }
    }
    v * 2f64.powi(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_number_readers() {
        assert_eq!(atoll(b"  42abc"), 42);
        assert_eq!(atoll(b"-17"), -17);
        assert_eq!(atoll(b"x1"), 0);
        assert_eq!(atoll(b"99999999999999999999"), i64::MAX);
        assert_eq!(atoll(b"-99999999999999999999"), i64::MIN);
        assert_eq!(strtoull16(b"ff"), 255);
        assert_eq!(strtoull16(b"0x1A"), 26);
        assert_eq!(strtoull16(b"0xg"), 0);
        assert_eq!(strtoull16(b"-1"), u64::MAX);
        assert_eq!(strtoull16(b"fffffffffffffffff"), u64::MAX);
        assert_eq!(atof(b"3.25 sec"), 3.25);
        assert_eq!(atof(b"-.5"), -0.5);
        assert_eq!(atof(b"1e3x"), 1000.0);
        assert_eq!(atof(b"1e"), 1.0);
        assert_eq!(atof(b"5."), 5.0);
        assert_eq!(atof(b"abc"), 0.0);
        assert_eq!(atof(b"0x1.8p1"), 3.0);
        assert!(atof(b"inf").is_infinite());
    }

    #[test]
    fn casts() {
        let t = Types::parse("a:integer b:bool c:float d:hex e:string f:whatever g");
        assert!(t.is_set());
        assert_eq!(t.cast("a", b"12"), Value::Int(12));
        assert_eq!(t.cast("b", b"TRUEly"), Value::Bool(true));
        assert_eq!(t.cast("b", b"false"), Value::Bool(false));
        assert_eq!(t.cast("b", b"yes"), Value::Str(Arc::from("yes")));
        assert_eq!(t.cast("c", b"0.5"), Value::Float(0.5));
        assert_eq!(t.cast("d", b"ff"), Value::UInt(255));
        assert_eq!(t.cast("e", b"x"), Value::Str(Arc::from("x")));
        assert_eq!(t.cast("f", b"x"), Value::Str(Arc::from("x")));
        assert_eq!(t.cast("zz", b"7"), Value::Str(Arc::from("7")));
        assert!(!Types::parse("").is_set());
        assert!(Types::parse("nocolon").is_set());
    }
}
