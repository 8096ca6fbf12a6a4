//! End-to-end tests of fave live in `tests/`; this library is empty on purpose.
