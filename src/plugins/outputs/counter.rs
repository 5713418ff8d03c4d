//! `counter` output: one line per flush on stdout saying how many records it carried.
//! Fluent Bit: plugins/out_counter/counter.c
//!
//! `{"ts":1796072754.366332,"serialized_events":2,"log_records":2,"total":2}`: the
//! wall-clock time of the flush, then the chunk's counts (Fluent Bit's `total` is the
//! chunk's count too, not a running total). agent carries no group markers, so the
//! three counts are equal.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, PropSpec, Props};
use crate::event::Chunk;
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "counter",
    description: "Records counter",
    props: PROPS,
    workers: 1,
    net: false,
    build,
};

struct CounterOutput;

fn build(_props: &Props, _ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    Ok(Box::new(CounterOutput))
}

/// The line for a chunk of `n` records flushed at `ts` seconds since the epoch.
fn line(ts: f64, n: usize) -> String {
    format!("{{\"ts\":{ts:.6},\"serialized_events\":{n},\"log_records\":{n},\"total\":{n}}}\n")
}

impl Output for CounterOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let text = line(ts, chunk.records.len());
            let written = crate::pipeline::engine::blocking(|| {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|_| out.flush())
            });
            match written {
                Ok(()) => FlushResult::Ok,
                Err(e) => FlushResult::Error(format!("cannot write to stdout: {e}")),
            }
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(CounterOutput)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fluent_bit_line() {
        assert_eq!(
            super::line(1_796_072_754.366_332, 2),
            "{\"ts\":1796072754.366332,\"serialized_events\":2,\"log_records\":2,\"total\":2}\n"
        );
    }
}
