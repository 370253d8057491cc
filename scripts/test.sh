#!/usr/bin/env bash
# The whole test suite: every crate, every feature (the fake Mastodon server
# lives behind `test-util`). No external service is needed yet: tests run the
# fake Mastodon server in-process on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --all-features "$@"
