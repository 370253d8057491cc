//! `fake-mastodon`: the fake Mastodon server as a process, for benchmarks.
fn main() {}
