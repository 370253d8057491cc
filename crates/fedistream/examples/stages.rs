//! Per-stage cost of the pipeline, for profiling (see docs/benchmarks.md):
//!
//! ```sh
//! target/release/fedistream bench generate --count 50000 --accounts 1000 --seed 1 --out /tmp/in.jsonl
//! taskset -c 0 cargo run --release -p fedistream --example stages -- /tmp/in.jsonl
//! ```

use fedistream_core::post::Via;
use fedistream_core::{AppendBatch, Event, Log, StatePut};
use fedistream_process::normalize::{parse_and_normalize, NormalizeContext};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let path = std::env::args().nth(1).expect("usage: stages INPUT.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().take(50000).collect();
    let n = lines.len() as f64;
    let t = Instant::now();
    let mut posts = vec![];
    for l in &lines {
        let ctx = NormalizeContext { instance: "bench", via: Via::Replay, received_at: chrono::Utc::now() };
        posts.push(parse_and_normalize(l, &ctx).unwrap());
    }
    println!("parse+normalize {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n);
    let t = Instant::now();
    let evs: Vec<Event> = posts.into_iter().map(|p| Event::created("s", p)).collect();
    println!("event build {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n);
    let t = Instant::now();
    let mut total = 0;
    for e in &evs {
        total += serde_json::to_string(e).unwrap().len();
    }
    println!("serialize {:.2} us (avg {} B)", t.elapsed().as_secs_f64() * 1e6 / n, total / evs.len());
    let t = Instant::now();
    for e in &evs {
        let _ = e.fingerprint();
    }
    println!("fingerprint {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n);
    let dir = tempfile::tempdir().unwrap();
    let log = fedistream_core::sqlite::SqliteLog::open(dir.path().join("l.db"), Default::default()).unwrap();
    let t = Instant::now();
    for chunk in evs.chunks(1000) {
        log.append(AppendBatch { events: fedistream_core::event::encode_all(chunk.to_vec()), state: vec![] }).await.unwrap();
    }
    println!("append (no state) {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n);
    let log2 = fedistream_core::sqlite::SqliteLog::open(dir.path().join("l2.db"), Default::default()).unwrap();
    let t = Instant::now();
    for chunk in evs.chunks(1000) {
        let state = chunk.iter().map(|e| StatePut::set("seen", e.key.clone(), e.fingerprint())).collect();
        log2.append(AppendBatch { events: fedistream_core::event::encode_all(chunk.to_vec()), state }).await.unwrap();
    }
    println!("append (+seen) {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n);
    let t = Instant::now();
    for chunk in evs.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|e| e.key.clone()).collect();
        let _ = log2.state_get_many("seen", &keys).await.unwrap();
    }
    println!("seen lookups {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n);
    let mut c = log.consumer(fedistream_core::log::EVENTS, "g").await.unwrap();
    let t = Instant::now();
    let mut got = 0;
    let mut bytes = Vec::new();
    loop {
        let r = c.poll(1000, std::time::Duration::ZERO).await.unwrap();
        if r.is_empty() {
            break;
        }
        got += r.len();
        for rec in &r {
            rec.write_json_line(&mut bytes).unwrap();
        }
        bytes.clear();
    }
    println!("consume+format {:.2} us ({got})", t.elapsed().as_secs_f64() * 1e6 / n);
}
