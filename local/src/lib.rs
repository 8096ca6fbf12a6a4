//! The local stack: what `fave up` runs on one machine so that the same HTTP contract holds
//! as on an OpenFaaS cluster.
//!
//! - [`s3`]: the embedded S3-compatible server (s3s + s3s-fs, conditional writes made safe
//!   under concurrency).
//! - [`stack_file`]: reading `stack.yml` as faas-cli does, the parts a local run needs, after
//!   [`envsubst`] has substituted its `${VAR:-default}`s from a [`stack_env::StackEnv`]
//!   (explicit variables, a profile's env file, the environment).
//! - [`scaling`]: min/max replicas and scale to zero, from OpenFaaS's labels.
//! - [`supervisor`]: runs each function's replicas as local processes (`runner`: one
//!   replica's process), scales them, restarts them.
//! - [`gateway`]: the OpenFaaS-compatible gateway in front of them, with [`auth`] on
//!   `/system/*`.
//! - [`stack`]: all of the above started together, for the CLI and the tests.

pub mod auth;
pub mod envsubst;
pub mod gateway;
mod runner;
pub mod s3;
pub mod scaling;
pub mod stack;
pub mod stack_env;
pub mod stack_file;
pub mod supervisor;
