//! What every fave binary shares.
//!
//! Layout, bottom up:
//! - [`ids`], [`keys`]: validated newtype ids and the one place S3 keys are built.
//! - [`contract`]: what both ends of a seam read, as types (so far, the failure codes).
//! - [`error`]: the one JSON error shape and the error type HTTP handlers return.
//! - [`config`], [`secrets`]: configuration read once from the environment and validated.
//! - [`storage`]: S3-compatible storage on aws-sdk-s3 (streaming, multipart, conditional writes).
//! - [`state`]: the `state.json` schema and the request/stage state machine.
//! - [`readiness`]: a model loading while the function already listens; the cold-start rule.
//! - [`stage`]: the stage call contract, the [`stage::Stage`] trait and the harness serving it;
//!   [`claim`]: a call's claim on its work, so one key runs at most once at a time.
//! - [`gateway`]: the client that invokes functions through the OpenFaaS gateway.
//! - [`retry`]: the one retry policy type.
//! - [`server`], [`telemetry`]: serving a router with graceful shutdown; logging set-up.
//! - [`tool`]: running ffmpeg and friends.

pub mod claim;
pub mod config;
pub mod contract;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod keys;
pub mod readiness;
pub mod retry;
pub mod secrets;
pub mod server;
pub mod stage;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod timeline;
pub mod tool;
