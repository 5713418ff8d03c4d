//! Filters, one module per Fluent Bit name.

pub mod aws;
pub mod expect;
pub mod flow_aggregate;
pub mod grep;
pub mod kubernetes;
pub mod limit;
pub mod lua;
pub mod modify;
pub mod multiline;
pub mod nest;
pub mod parser;
pub mod ratelimit;
pub mod record_modifier;
pub mod rewrite_tag;
pub mod stdout;
pub mod throttle;
