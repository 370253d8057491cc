//! Where objects go: `<prefix>/<dataset>/date=YYYY-MM-DD/hour=HH/part-<partition>-<first offset>-<last offset>.<ext>`.
//!
//! Names are deterministic from the log positions an object holds, so a retry
//! after a failure or a crash rewrites the same object instead of adding a
//! second copy. The partition directories (Hive style) come from the record's
//! event time, UTC. This module also reads names back: what an archive already
//! holds, per directory and log partition, as offset ranges.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

/// A Hive partition directory below the dataset (`date=2026-12-07/hour=08`).
pub fn hive_dir(t: DateTime<Utc>) -> String {
    t.format("date=%Y-%m-%d/hour=%H").to_string()
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

/// The start of the hour a Hive directory (`date=…/hour=…`) stands for.
pub fn dir_start(dir: &str) -> Option<DateTime<Utc>> {
    let (date, hour) = dir.split_once('/')?;
    let date = chrono::NaiveDate::parse_from_str(date.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.strip_prefix("hour=")?.parse().ok()?;
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
