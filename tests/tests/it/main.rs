//! End-to-end tests, one binary (see `util` for how the stack is started).
//!
//! They use the embedded S3 server unless `AWS_ENDPOINT_URL` names another S3-compatible
//! server (CI runs them a second time against moto that way).

mod analysis;
mod api;
mod bad_input;
mod bench;
mod cli;
mod clients;
mod deploy;
mod durability;
mod faults;
mod gate;
mod gateway;
mod library;
mod logs;
mod pipeline;
mod s3_race;
mod scaling;
mod transcribe;
mod ui;
mod util;
