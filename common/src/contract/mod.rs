//! The contract both ends of a seam read, as types: so far, what a failure may be called
//! ([`FailureCode`]). Stage inputs and outputs, the API bodies and final.json are to follow
//! (the typed-seams issue); JSON is for the wire and the store only.

pub mod failure;

pub use failure::FailureCode;
