//! `stdout` filter: prints every record that passes, as it is at this point of the
//! filter chain, and changes nothing (for debugging a pipeline).
//! Fluent Bit: plugins/filter_stdout/stdout.c

use std::io::Write as _;
use std::time::Instant;

use crate::config::{ConfigError, PropSpec, Props};
use crate::event::format::write_print_map;
use crate::event::Record;
use crate::plugins::{BuildContext, Filter, FilterPlugin, FilterResult};

pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "stdout",
    description: "Filter events to STDOUT",
    props: &[] as &[PropSpec],
    build,
};

struct StdoutFilter {
    buf: Vec<u8>,
}

fn build(_: &Props, _: &BuildContext) -> Result<Box<dyn Filter>, ConfigError> {
    Ok(Box::new(StdoutFilter { buf: Vec::new() }))
}

/// One record as Fluent Bit's filter prints it:
/// `[{index}] {tag}: [{sec}.{nsec:09}, {metadata}, {body}]\n`, the seconds as 32 bits.
fn write_record(out: &mut Vec<u8>, index: usize, tag: &str, rec: &Record) {
    out.push(b'[');
    out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    out.extend_from_slice(b"] ");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b": [");
    out.extend_from_slice(itoa::Buffer::new().format(rec.time.secs as u32).as_bytes());
    let _ = write!(out, ".{:09}, ", rec.time.nanos);
    write_print_map(out, &rec.metadata);
    out.extend_from_slice(b", ");
    write_print_map(out, &rec.body);
    out.extend_from_slice(b"]\n");
}

impl Filter for StdoutFilter {
    fn filter(&mut self, tag: &str, records: &mut Vec<Record>, _now: Instant) -> FilterResult {
        self.buf.clear();
        for (i, rec) in records.iter().enumerate() {
            write_record(&mut self.buf, i, tag, rec);
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(&self.buf).and_then(|_| out.flush()) {
            crate::debug!("[filter:stdout] cannot write to stdout: {e}");
        }
        FilterResult::NoTouch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Value};
    use std::sync::Arc;

    #[test]
    fn prints_as_fluent_bits_filter() {
        let rec = Record::new(
            EventTime::new(1_700_000_000, 5),
            vec![
                (Arc::from("a"), Value::Str(Arc::from("x"))),
                (Arc::from("n"), Value::UInt(1)),
            ],
        );
        let mut out = Vec::new();
        write_record(&mut out, 0, "t.0", &rec);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[0] t.0: [1700000000.000000005, {}, {\"a\"=>\"x\", \"n\"=>1}]\n"
        );
    }
}
