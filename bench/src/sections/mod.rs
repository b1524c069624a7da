//! One module per section of the report, in the order `main.rs` runs them
//! (`--sections` names: throughput, latency, stream, memory, cold, sizes,
//! tenancy, serverless).
//! Each takes the running setup and appends its table and its targets.

pub mod cold_start;
pub mod latency;
pub mod memory;
pub mod serverless;
pub mod sizes;
pub mod streaming;
pub mod tenancy;
pub mod throughput;
