//! Where objects go: `<prefix>/<dataset>/date=YYYY-MM-DD/hour=HH/[instance=HOST/][bucket=NN/]part-<partition>-<first offset>-<last offset>.<ext>`.
//!
//! Names are deterministic from the log positions an object holds, so a retry
//! after a failure or a crash rewrites the same object instead of adding a
//! second copy. The partition directories (Hive style) come from the record's
//! event time, UTC, and for the posts dataset optionally from the server the
//! event was read from and a hash bucket of its account ([`Layout`], the
//! channel's `partition_by`). This module also reads names back: what an
//! archive already holds, per directory and log partition, as offset ranges.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A Hive partition directory below the dataset (`date=2026-12-07/hour=08`).
pub fn hive_dir(t: DateTime<Utc>) -> String {
    t.format("date=%Y-%m-%d/hour=%H").to_string()
}

/// A partition level below `date=…/hour=…` (the channel's `partition_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Level {
    /// `instance=HOST`: the server the event was read from (the `instance` column).
    Instance,
    /// `bucket=NN`: the author (`account`) hashed into `buckets` buckets ([`account_bucket`]).
    Bucket,
}

impl Level {
    /// The partition column's name (the directory's key).
    pub fn column(self) -> &'static str {
        match self {
            Level::Instance => "instance",
            Level::Bucket => "bucket",
        }
    }
}

impl TryFrom<String> for Level {
    type Error = String;
    // The config names the key: inside a channel's table serde's path stops at the table.
    fn try_from(s: String) -> Result<Level, String> {
        match s.as_str() {
            "instance" => Ok(Level::Instance),
            "bucket" => Ok(Level::Bucket),
            other => Err(format!("partition_by: `{other}` is not a partition level: use \"instance\" or \"bucket\"")),
        }
    }
}

/// How the posts dataset's directories are named: `date=…/hour=…`, then the
/// levels of `partition_by` in their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub levels: Vec<Level>,
    /// Buckets of [`Level::Bucket`] (at least 1).
    pub buckets: u32,
}

impl Layout {
    /// The directory of an event at `t`, read from `instance`, by `account`.
    pub fn dir(&self, t: DateTime<Utc>, instance: &str, account: &str) -> String {
        let mut d = hive_dir(t);
        for l in &self.levels {
            match l {
                Level::Instance => {
                    d.push_str("/instance=");
                    d.push_str(&hive_value(instance));
                }
                Level::Bucket => {
                    let width = (self.buckets.max(1) - 1).to_string().len().max(2);
                    d.push_str(&format!("/bucket={:0width$}", account_bucket(account, self.buckets)));
                }
            }
        }
        d
    }
}

/// The bucket of an account (`user@host`) among `buckets`: its 64-bit FNV-1a
/// hash (of the UTF-8 bytes) modulo `buckets`. Stable across versions and
/// machines: a reader can compute it to prune to one account's bucket.
pub fn account_bucket(account: &str, buckets: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(buckets.max(1))) as u32
}

/// A value as a directory name: host names stay as they are (lowercased);
/// any byte outside `a-z 0-9 . - _` becomes `_`, and an empty value `_`.
pub fn hive_value(v: &str) -> String {
    let out: String = v
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    if out.is_empty() {
        "_".into()
    } else {
        out
    }
}

/// The object name of the records of one directory and one log partition.
pub fn part_name(partition: u32, first: u64, last: u64, ext: &str) -> String {
    format!("part-{partition}-{first}-{last}.{ext}")
}

/// The name of a compacted object: the records of one directory and log
/// partition that generation `generation` of `fedistream archive compact`
/// kept, from objects that held offsets `first` to `last`.
pub fn compacted_name(partition: u32, first: u64, last: u64, generation: u64, ext: &str) -> String {
    format!("part-{partition}-{first}-{last}-g{generation}.{ext}")
}

/// `(partition, first, last)` of an object name [`part_name`] or
/// [`compacted_name`] wrote, `None` for anything else (staging files of an
/// interrupted upload, foreign files).
pub fn parse_part_name(name: &str) -> Option<(u32, u64, u64)> {
    parse_part(name).map(|(p, f, l, _)| (p, f, l))
}

/// The compaction generation of a compacted object's name (`None`: the
/// channel wrote it, or it is not an archive object).
pub fn part_generation(name: &str) -> Option<u64> {
    parse_part(name).and_then(|(_, _, _, g)| g)
}

fn parse_part(name: &str) -> Option<(u32, u64, u64, Option<u64>)> {
    let rest = name.strip_prefix("part-")?;
    let (stem, ext) = rest.split_once('.')?;
    if !matches!(ext, "parquet" | "jsonl" | "jsonl.gz") {
        return None;
    }
    let mut it = stem.splitn(4, '-');
    let p = it.next()?.parse().ok()?;
    let first = it.next()?.parse().ok()?;
    let last = it.next()?.parse().ok()?;
    let generation = match it.next() {
        None => None,
        Some(g) => Some(g.strip_prefix('g')?.parse().ok()?),
    };
    (first <= last).then_some((p, first, last, generation))
}

/// The start of the hour a Hive directory (`date=…/hour=…`, maybe with
/// `key=value` levels below, see [`Layout`]) stands for.
pub fn dir_start(dir: &str) -> Option<DateTime<Utc>> {
    let mut parts = dir.split('/');
    let date = chrono::NaiveDate::parse_from_str(parts.next()?.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let hour: u32 = parts.next()?.strip_prefix("hour=")?.parse().ok()?;
    if !parts.all(|p| p.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())) {
        return None;
    }
    Some(date.and_hms_opt(hour, 0, 0)?.and_utc())
}

/// The offset ranges an archive holds, per (directory, log partition).
#[derive(Debug, Default, Clone)]
pub struct Held {
    ranges: HashMap<(String, u32), Vec<(u64, u64)>>,
    objects: usize,
}

impl Held {
    /// Record an object found at `rel` (its path below the dataset).
    pub fn add(&mut self, rel: &str) -> bool {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let Some((p, first, last)) = parse_part_name(name) else { return false };
        self.ranges.entry((dir.to_string(), p)).or_default().push((first, last));
        self.objects += 1;
        true
    }

    pub fn objects(&self) -> usize {
        self.objects
    }

    /// Whether an object in `dir` holds the record at (`partition`, `offset`).
    ///
    /// Exact because of how objects are made: one flush writes all the records
    /// it buffered, which are contiguous in the log per partition; its object
    /// for a directory holds every record of that directory between its first
    /// and last offset. So a record whose directory has an object covering its
    /// offset is in that object.
    pub fn holds(&self, dir: &str, partition: u32, offset: u64) -> bool {
        self.ranges.get(&(dir.to_string(), partition)).is_some_and(|rs| rs.iter().any(|&(f, l)| f <= offset && offset <= l))
    }

    /// The highest offset held per partition (for the log).
    pub fn last_offsets(&self) -> HashMap<u32, u64> {
        let mut out: HashMap<u32, u64> = HashMap::new();
        for ((_, p), rs) in &self.ranges {
            for &(_, l) in rs {
                let e = out.entry(*p).or_insert(l);
                *e = (*e).max(l);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(part_name(3, 10, 42, "parquet"), "part-3-10-42.parquet");
        assert_eq!(parse_part_name("part-3-10-42.parquet"), Some((3, 10, 42)));
        assert_eq!(parse_part_name("part-0-1-1.jsonl.gz"), Some((0, 1, 1)));
        assert_eq!(compacted_name(3, 10, 42, 7, "parquet"), "part-3-10-42-g7.parquet");
        assert_eq!(parse_part_name("part-3-10-42-g7.parquet"), Some((3, 10, 42)));
        assert_eq!(part_generation("part-3-10-42-g7.parquet"), Some(7));
        assert_eq!(part_generation("part-3-10-42.parquet"), None);
        for bad in [
            "part-3-10-42-7.parquet",
            "part-3-10-42-gx.parquet",
            "part-3-10-42.parquet#1",
            "part-3-10.parquet",
            "x-1-2-3.parquet",
            "part-1-9-3.parquet",
            "part-a-1-2.jsonl",
        ] {
            assert_eq!(parse_part_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn hive_dirs_are_utc_date_and_hour() {
        let t: DateTime<Utc> = "2026-12-07T08:59:59Z".parse().unwrap();
        assert_eq!(hive_dir(t), "date=2026-12-07/hour=08");
        assert_eq!(dir_start("date=2026-12-07/hour=08"), Some("2026-12-07T08:00:00Z".parse().unwrap()));
        assert_eq!(dir_start("date=2026-12-07"), None);
        assert_eq!(dir_start("date=2026-12-07/hour=08/instance=a.example/bucket=03"), Some("2026-12-07T08:00:00Z".parse().unwrap()));
        assert_eq!(dir_start("date=2026-12-07/hour=08/part-0-1-2.parquet"), None);
    }

    #[test]
    fn layouts_add_instance_and_bucket_levels_in_their_order() {
        let t: DateTime<Utc> = "2026-12-07T08:59:59Z".parse().unwrap();
        let plain = Layout::default();
        assert_eq!(plain.dir(t, "mastodon.social", "a@b.example"), "date=2026-12-07/hour=08");
        let both = Layout { levels: vec![Level::Instance, Level::Bucket], buckets: 16 };
        let b = account_bucket("alice@example.org", 16);
        assert_eq!(
            both.dir(t, "Mastodon.Social", "alice@example.org"),
            format!("date=2026-12-07/hour=08/instance=mastodon.social/bucket={b:02}")
        );
        let swapped = Layout { levels: vec![Level::Bucket, Level::Instance], buckets: 16 };
        assert_eq!(swapped.dir(t, "x.example", "alice@example.org"), format!("date=2026-12-07/hour=08/bucket={b:02}/instance=x.example"));
        // Wide bucket numbers are padded to the width of the largest.
        let wide = Layout { levels: vec![Level::Bucket], buckets: 1000 };
        assert!(wide.dir(t, "", "alice@example.org").ends_with(&format!("/bucket={:03}", account_bucket("alice@example.org", 1000))));
        // Path-unsafe bytes never reach a directory name.
        assert_eq!(hive_value("host:8080/x=y"), "host_8080_x_y");
        assert_eq!(hive_value(""), "_");
    }

    #[test]
    fn account_buckets_are_fnv1a_stable_and_spread() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(account_bucket("a", u32::MAX), (0xaf63_dc4c_8601_ec8c_u64 % u64::from(u32::MAX)) as u32);
        assert_eq!(account_bucket("anyone@example.org", 1), 0);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[account_bucket(&format!("user{i}@example.org"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn held_ranges_answer_per_directory_and_partition() {
        let mut h = Held::default();
        assert!(h.add("date=2026-12-07/hour=08/part-0-1-5.parquet"));
        assert!(!h.add("date=2026-12-07/hour=08/part-0-6-9.parquet#2"));
        assert!(h.holds("date=2026-12-07/hour=08", 0, 3));
        assert!(!h.holds("date=2026-12-07/hour=09", 0, 3));
        assert!(!h.holds("date=2026-12-07/hour=08", 1, 3));
        assert!(!h.holds("date=2026-12-07/hour=08", 0, 6));
        assert_eq!(h.last_offsets().get(&0), Some(&5));
    }
}
