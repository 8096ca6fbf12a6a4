# Sourced by the scripts: one build directory outside the clone, so CI runs and local runs on
# the same machine share an incremental build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fave-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Python tools (moto) live in a venv of their own, apart from the system's packages.
export FAVE_TOOLS="${FAVE_TOOLS:-$HOME/.cache/fave-tools}"
export FAVE_PYTHON="$FAVE_TOOLS/venv/bin/python"
