//! The `account_stats` processor alone: events read from their stored JSON
//! (in every iteration) and processed in batches of 4,096 (as the runtime hands them over), and the
//! memory its state takes for 10,000 accounts with hour and day windows
//! (counted by a counting allocator, printed once before the timed runs).
//!
//! `cargo bench -p fedistream-process --bench account_stats`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fedistream_core::component::{Processor, ProcessorOutput};
use fedistream_core::event::{Event, LogRecord, Position};
use fedistream_process::stats::{AccountStatsConfig, AccountStatsProcessor};

struct Counting;
static HELD: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LANGS: [&str; 5] = ["en", "de", "ja", "pt", "fr"];
const TAGS: [&str; 6] = ["rustlang", "photography", "books", "music", "cycling", "fediverse"];

/// `n` events by `accounts` accounts, one every `step` of event time, as the log stores them.
fn records(n: usize, accounts: usize, step: Duration) -> Vec<LogRecord> {
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
    (0..n)
        .map(|i| {
            let acct = format!("user{}@server{}.example", i % accounts, (i % accounts) % 37);
            let mut p = fedistream_core::testing::post(
                &acct,
                i as u64,
                &format!("Post number {i} about #{} with https://news.example/{i} and some more words", TAGS[i % 6]),
            );
            p.created_at = Some(t0 + step * i as i32);
            p.language = Some(LANGS[i % 5].into());
            p.tags = vec![TAGS[i % 6].into(), TAGS[(i / 7) % 6].into()];
            p.application = Some(["Web", "Tusky", "Ivory"][i % 3].into());
            let ev = Event::created("bench", p);
            LogRecord::new(Position { partition: 0, offset: i as u64 }, Utc::now(), ev.to_json().into())
        })
        .collect()
}

fn run(recs: &[LogRecord]) -> (AccountStatsProcessor, usize) {
    let mut p = AccountStatsProcessor::new("stats", &AccountStatsConfig::default(), "stats").unwrap();
    let mut produced = 0;
    for batch in recs.chunks(4096) {
        let mut out = ProcessorOutput::default();
        p.process(batch, &mut out).unwrap();
        produced += out.records.len();
    }
    (p, produced)
}

fn state_memory() {
    // 10,000 accounts, 5 posts each spread over a day: every account holds
    // its open hour and day windows and the posts in them.
    let before = HELD.load(Ordering::Relaxed);
    let recs = records(50_000, 10_000, Duration::milliseconds(1_728));
    let (p, _) = run(&recs);
    // Only the processor is measured, not the records it read.
    drop(recs);
    let held = HELD.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("account_stats state: {:.1} MiB for 10,000 accounts (hour and day windows, 5 posts each)", held as f64 / (1 << 20) as f64);
    drop(p);
}

fn bench(c: &mut Criterion) {
    state_memory();
    // 1,000 accounts over 10 days of event time: windows close and are evicted as it runs.
    let recs = records(100_000, 1_000, Duration::milliseconds(8_640));
    let mut g = c.benchmark_group("account_stats");
    g.sample_size(10);
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("process 100k events, 1k accounts, 10 days", |b| b.iter(|| run(&recs).1));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
