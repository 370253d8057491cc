//! Unit tests: rendering, idempotency keys, pacing windows, config.
