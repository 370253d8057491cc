//! `fake-mastodon`: the fake Mastodon server of `fedistream_connectors::testing`
//! as a process, for benchmarks (e.g. fedistream polling 1,000 accounts).
//!
//! ```text
//! fake-mastodon --port 0 --accounts N [--flavor mastodon|gotosocial]
//!               [--posts-per-account K] [--post-interval-ms M]
//!               [--rate-limit L] [--rate-window-secs S] [--token T]
//! ```
//!
//! The throttle defaults to Mastodon's 300 requests per 5 minutes per IP; a
//! benchmark polling many accounts from one process will want `--rate-limit`
//! raised (real Mastodon exempts loopback clients entirely).
//!
//! Creates `user0..user{N-1}` with K posts each, optionally posts to a random
//! account every M ms, prints exactly one line `LISTENING http://127.0.0.1:PORT`
//! once ready, and runs until killed. Arguments are parsed by hand: this binary
//! only exists with the `test-util` feature and the crate does not depend on clap.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use fedistream_connectors::testing::{FakeConfig, FakeMastodon, Flavor, NewStatus, RateLimitConfig};
use rand::Rng;

struct Args {
    port: u16,
    accounts: usize,
    flavor: Flavor,
    posts_per_account: usize,
    post_interval_ms: Option<u64>,
    rate_limit: RateLimitConfig,
    token: Option<String>,
}

const USAGE: &str = "usage: fake-mastodon --port P --accounts N [--flavor mastodon|gotosocial] \
[--posts-per-account K] [--post-interval-ms M] [--rate-limit L] [--rate-window-secs S] [--token T]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        accounts: 1,
        flavor: Flavor::Mastodon,
        posts_per_account: 0,
        post_interval_ms: None,
        rate_limit: RateLimitConfig::default(),
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--port" => args.port = value.parse().map_err(bad)?,
            "--accounts" => args.accounts = value.parse().map_err(bad)?,
            "--posts-per-account" => args.posts_per_account = value.parse().map_err(bad)?,
            "--post-interval-ms" => args.post_interval_ms = Some(value.parse().map_err(bad)?),
            "--rate-limit" => args.rate_limit.limit = value.parse().map_err(bad)?,
            "--rate-window-secs" => args.rate_limit.window = Duration::from_secs(value.parse().map_err(bad)?),
            "--token" => args.token = Some(value),
            "--flavor" => {
                args.flavor = match value.as_str() {
                    "mastodon" => Flavor::Mastodon,
                    "gotosocial" => Flavor::GoToSocial,
                    other => return Err(format!("unknown flavor {other}\n{USAGE}")),
                }
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let cfg = FakeConfig { flavor: args.flavor, rate_limit: args.rate_limit, token: args.token, ..FakeConfig::default() };
    let server = match FakeMastodon::start_on(cfg, args.port).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("fake-mastodon: cannot listen on 127.0.0.1:{}: {err}", args.port);
            return ExitCode::FAILURE;
        }
    };
    for a in 0..args.accounts {
        let username = format!("user{a}");
        server.add_account(&username, Default::default());
        for p in 0..args.posts_per_account {
            server.post(&username, NewStatus::html(format!("<p>post {p} by {username}</p>")));
        }
    }
    let mut stdout = std::io::stdout();
    let ready = writeln!(stdout, "LISTENING {}", server.base_url()).and_then(|()| stdout.flush());
    if let Err(err) = ready {
        eprintln!("fake-mastodon: writing to stdout failed: {err}");
        return ExitCode::FAILURE;
    }

    match args.post_interval_ms {
        Some(ms) if args.accounts > 0 => {
            let mut tick = tokio::time::interval(Duration::from_millis(ms.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let account = rand::thread_rng().gen_range(0..args.accounts);
                let username = format!("user{account}");
                server.post(&username, NewStatus::html(format!("<p>live {n} by {username}</p>")));
                n += 1;
            }
        }
        _ => std::future::pending::<ExitCode>().await,
    }
}
