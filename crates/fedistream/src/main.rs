//! The `fedistream` binary: follow Mastodon accounts losslessly and publish their
//! posts to channels. See `fedistream --help`.

#[cfg(feature = "archive")]
mod archive;
mod bench;
#[cfg(feature = "archive")]
mod bench_archive;
#[cfg(feature = "http")]
mod bench_http;
#[cfg(feature = "kafka")]
mod bench_kafka;
#[cfg(feature = "kafka")]
mod bench_kafka_state;
#[cfg(feature = "test-util")]
mod bench_mastodon;
#[cfg(feature = "test-util")]
mod bench_scale;
#[cfg(feature = "test-util")]
mod bench_stream;
#[cfg(all(feature = "webhook", feature = "http"))]
mod bench_webhook;
mod cli;
mod config;
mod features;
mod follow;
#[cfg(feature = "http")]
mod http;
mod pipeline;
mod progress;
mod roles;
#[cfg(feature = "sql")]
mod sql;
mod stats;
mod status;

use std::process::ExitCode;

use clap::Parser;

// mimalloc: the pipeline allocates many short-lived strings per post; glibc malloc
// spent about a quarter of the CPU time in the pipeline benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli.global);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fedistream: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fedistream: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
