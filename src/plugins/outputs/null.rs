//! `null` output: every record is accepted and thrown away.
//! Fluent Bit: plugins/out_null/null.c
//!
//! With `format` set to a JSON format the chunk is still encoded (and the result thrown
//! away), as Fluent Bit does, so that a benchmark of JSON encoding can use it.

use super::stdout::StdoutFormat;
use super::{json_options, JSON_DATE_FORMAT, JSON_DATE_KEY};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::{self, JsonMode};
use crate::event::Chunk;
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "format",
        PropKind::Enum(&["msgpack", "json", "json_lines", "json_stream"]),
        None,
        "Encode each chunk in this format before discarding it: msgpack (no encoding), \
         json, json_lines or json_stream.",
    ),
    JSON_DATE_FORMAT,
    JSON_DATE_KEY,
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "null",
    description: "Throws away events",
    props: PROPS,
    workers: 1,
    net: false,
    build,
};

struct NullOutput {
    /// `Some` when each chunk is to be encoded as JSON first.
    encode: Option<StdoutFormat>,
    buf: Vec<u8>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let encode = props
        .str("format")
        .and_then(JsonMode::parse)
        .map(|mode| StdoutFormat::Json(mode, json_options(props, ctx.service.escape_unicode)));
    Ok(Box::new(NullOutput {
        encode,
        buf: Vec::new(),
    }))
}

impl Output for NullOutput {
    /// Metric sets too, thrown away as records are (Fluent Bit's null takes both).
    fn signals(&self) -> crate::event::metrics::Signals {
        crate::event::metrics::Signals::LOGS_AND_METRICS
    }

    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            if let Some(StdoutFormat::Json(mode, opts)) = &self.encode {
                self.buf.clear();
                format::write_json_chunk(&mut self.buf, &chunk.records, *mode, opts);
                crate::debug!("[output:null] encoded {} bytes", self.buf.len());
            }
            FlushResult::Ok
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(NullOutput {
            encode: self.encode.clone(),
            buf: Vec::new(),
        })
    }
}
