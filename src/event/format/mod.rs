//! Byte-exact record formatters shared by the outputs (`stdout`, later `tcp`/`forward`).
//!
//! Fluent Bit counterparts:
//! * [`write_print_record`]: the default (`format msgpack`) line of `plugins/out_stdout/stdout.c`,
//!   which prints values with `msgpack_object_print` (`lib/msgpack-c/src/objectc.c`).
//! * [`write_json_record`] / [`write_json_chunk`]: `flb_pack_msgpack_to_json_format` and
//!   `msgpack2json` in `src/flb_pack.c`, strings through `flb_utils_write_str` (`src/flb_utils.c`).
//! * [`write_msgpack_record`]: the Fluent Bit v2 event encoding (`flb_log_event_encoder`),
//!   `[[EventTime, {metadata}], {body}]`.
//!
//! Every function appends to a caller-owned `Vec<u8>` and allocates nothing else, so an
//! output can format a whole flush into one reused buffer.

mod json;
mod msgpack;
mod print;
mod prometheus;

pub use json::{
    iso8601, write_double, write_json_chunk, write_json_map, write_json_record, write_json_str,
    write_json_value, write_map_entries, DateFormat, JsonMode, JsonOptions,
};
pub use msgpack::{
    kind, msgpack_value_len, peek_is_array, read_array_len, read_event_time, read_msgpack_map,
    read_msgpack_map_cached, read_msgpack_record, read_msgpack_value, write_event_time,
    write_msgpack_map, write_msgpack_record, write_msgpack_value, DecodeError, KeyCache, ValueLen,
};
pub use print::{write_print_map, write_print_record, write_print_value};
pub use prometheus::{write_g, write_metrics_text, write_prometheus, PromOptions};
