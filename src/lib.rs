//! medallion: a streaming lakehouse pipeline in one binary.
//!
//! CSV landing files are streamed into Kafka ([`tasks::ingest`]), Kafka into a Bronze
//! Delta table ([`tasks::bronze`]), exactly once on every hop. A run is configured by a
//! bundle file ([`bundle`]) and driven by [`job::run`]. Declarative pipelines of
//! streaming tables and materialized views, in SQL, run through [`pipeline`].

// Errors carry librdkafka and delta-rs errors by value, with the context a user needs;
// they are returned once per task, never on a per-row path, so their size is no cost.
#![allow(clippy::result_large_err)]

pub mod bench;
pub mod broker;
pub mod bundle;
pub mod catalog;
pub mod checkpoint;
pub mod delta;
pub mod deploy;
pub mod fault;
pub mod generate;
pub mod gzip;
pub mod job;
pub mod kafka;
pub mod kafka_server;
pub mod lock;
pub mod notify;
pub mod parallel;
pub mod pipeline;
pub mod private;
pub mod progress;
pub mod quarantine;
pub mod reset;
pub mod scheduler;
pub mod secrets;
pub mod source;
pub mod sql;
pub mod stream;
pub mod tasks;
pub mod ui;
