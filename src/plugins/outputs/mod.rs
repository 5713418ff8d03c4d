//! Outputs, one module per Fluent Bit name.

pub mod stdout;
