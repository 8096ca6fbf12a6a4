//! The local stack: what `fave up` runs on one machine so that the same HTTP contract holds
//! as on an OpenFaaS cluster.
//!
//! - [`s3`]: the embedded S3-compatible server (s3s + s3s-fs, conditional writes made safe
//!   under concurrency).
//! - [`stack_file`]: reading `stack.yml` as faas-cli does, the parts a local run needs.
//! - [`supervisor`]: runs each function as a local process, health-checks and restarts it.
//! - [`gateway`]: the OpenFaaS-compatible gateway in front of them.
//! - [`stack`]: all of the above started together, for the CLI and the tests.

pub mod gateway;
pub mod s3;
pub mod stack;
pub mod stack_file;
pub mod supervisor;
