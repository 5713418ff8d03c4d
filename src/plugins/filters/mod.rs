//! Filters, one module per Fluent Bit name.

pub mod record_modifier;
