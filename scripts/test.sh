#!/usr/bin/env bash
# The whole test suite: every crate, every feature. Starts what the tests need:
# a real Kafka broker on 127.0.0.1:9092 (scripts/kafka up; left running, stop
# it with scripts/kafka down; the topics earlier runs left are deleted first,
# as hundreds of partitions slow a single broker down) and a Python
# environment with confluent-kafka and fastavro (scripts/python-deps). The fake
# Mastodon server and the schema registry stand-in run inside the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/kafka up
scripts/kafka clean-tests
export FEDISTREAM_PYTHON="${FEDISTREAM_PYTHON:-$(scripts/python-deps)}"
export FEDISTREAM_KAFKA_BROKERS="${FEDISTREAM_KAFKA_BROKERS:-127.0.0.1:9092}"
exec cargo test --workspace --all-features "$@"
