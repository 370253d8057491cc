#!/usr/bin/env bash
# The whole test suite: every crate, every feature. Starts what the tests need:
# a real Kafka broker on 127.0.0.1:9092 (scripts/kafka up; left running, stop
# it with scripts/kafka down; the topics earlier runs left are deleted first,
# as hundreds of partitions slow a single broker down), a real schema registry
# on 127.0.0.1:8081 (scripts/registry up: Apicurio Registry, built from Maven
# Central once, about 30-40 s; left running, scripts/registry down stops it), a
# real S3-compatible server on 127.0.0.1:9000 (scripts/s3 up: MinIO built with
# go install once, about 12 minutes, then cached; left running, scripts/s3 down
# stops it) and a Python environment with confluent-kafka[avro], pyarrow and
# duckdb, and Playwright (scripts/python-deps), and Debian's Chromium
# (scripts/chromium, from apt when missing) for the dashboard's browser test.
# The fake Mastodon server runs inside the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/kafka up
scripts/kafka clean-tests
scripts/registry up
scripts/s3 up
eval "$(scripts/s3 env)"
export FEDISTREAM_PYTHON="${FEDISTREAM_PYTHON:-$(scripts/python-deps)}"
export FEDISTREAM_CHROMIUM="${FEDISTREAM_CHROMIUM:-$(scripts/chromium)}"
export FEDISTREAM_KAFKA_BROKERS="${FEDISTREAM_KAFKA_BROKERS:-127.0.0.1:9092}"
export FEDISTREAM_SCHEMA_REGISTRY="${FEDISTREAM_SCHEMA_REGISTRY:-$(scripts/registry url)}"
exec cargo test --workspace --all-features "$@"
