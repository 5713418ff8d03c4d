//! Filters, one module per Fluent Bit name.

pub mod flow_aggregate;
pub mod record_modifier;
