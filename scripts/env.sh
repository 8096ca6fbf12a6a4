# Sourced by the scripts: one build directory outside the clone, so CI runs and local runs on
# the same machine share an incremental build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fave-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
