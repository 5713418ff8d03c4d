//! `stdout` output: records printed in Fluent Bit's formats, one write per flush.
//! Metrics are printed as Fluent Bit's default format prints them: cmetrics' text, one
//! line per sample (`2024-01-01T00:00:00.000000000Z name{labels} = value`), whatever
//! `format` says (Fluent Bit's json formats print OTLP JSON there, not done here).
//! Fluent Bit: plugins/out_stdout/stdout.c

use std::io::Write;

use super::{json_options, JSON_DATE_FORMAT, JSON_DATE_KEY};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::{self, JsonMode, JsonOptions};
use crate::event::Chunk;
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "format",
        PropKind::Enum(&["msgpack", "json", "json_lines", "json_stream"]),
        Some("msgpack"),
        "Output format: msgpack (Fluent Bit's printed form), json, json_lines or json_stream.",
    ),
    JSON_DATE_FORMAT,
    JSON_DATE_KEY,
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "stdout",
    description: "Prints events to STDOUT",
    props: PROPS,
    workers: 1,
    net: false,
    build,
};

/// How records are printed.
#[derive(Clone, Debug)]
pub enum StdoutFormat {
    /// `[0] tag: [[sec.nsec, {meta}], {body}]`
    Print,
    Json(JsonMode, JsonOptions),
}

struct StdoutOutput {
    format: StdoutFormat,
    /// Reused between flushes: one allocation for the life of the output.
    buf: Vec<u8>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let opts = json_options(props, ctx.service.escape_unicode);
    let format = match props
        .str("format")
        .unwrap_or("msgpack")
        .to_ascii_lowercase()
        .as_str()
    {
        "json" => StdoutFormat::Json(JsonMode::Json, opts),
        "json_lines" => StdoutFormat::Json(JsonMode::JsonLines, opts),
        "json_stream" => StdoutFormat::Json(JsonMode::JsonStream, opts),
        _ => StdoutFormat::Print,
    };
    Ok(Box::new(StdoutOutput {
        format,
        buf: Vec::with_capacity(64 * 1024),
    }))
}

/// Formats a whole chunk into `buf` (cleared first).
pub fn render(format: &StdoutFormat, chunk: &Chunk, buf: &mut Vec<u8>) {
    buf.clear();
    if chunk.is_metrics() {
        for set in &chunk.metrics {
            format::write_metrics_text(buf, set);
        }
        return;
    }
    match format {
        StdoutFormat::Print => {
            for (i, rec) in chunk.records.iter().enumerate() {
                format::write_print_record(buf, i, &chunk.tag, rec);
            }
        }
        StdoutFormat::Json(mode, opts) => {
            format::write_json_chunk(buf, &chunk.records, *mode, opts)
        }
    }
}

impl Output for StdoutOutput {
    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            render(&self.format, chunk, &mut self.buf);
            // A write to a full pipe blocks: hand this worker's other tasks (timers, the
            // shutdown's grace period) to another thread meanwhile.
            let buf = &self.buf;
            let written = crate::pipeline::engine::blocking(|| {
                let mut out = std::io::stdout().lock();
                out.write_all(buf).and_then(|_| out.flush())
            });
            match written {
                Ok(()) => FlushResult::Ok,
                Err(e) => FlushResult::Error(format!("cannot write to stdout: {e}")),
            }
        })
    }

    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::LOGS_AND_METRICS
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(StdoutOutput {
            format: self.format.clone(),
            buf: Vec::with_capacity(64 * 1024),
        })
    }
}
