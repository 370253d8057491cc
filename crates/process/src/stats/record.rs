//! The stats record: one account's activity in one window, computed from the
//! facts of the posts the window holds. Its fields are in a fixed order and its
//! maps are sorted, so the same input always gives the same bytes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::facts::Facts;
use super::json::Writer;
use super::window::{rfc3339, write_rfc3339, Calendar, WindowSize};

/// One window of one account. An upsert: the latest `revision` of a `key`
/// replaces the earlier ones; `final = false` marks an early look at a window
/// that is still open (revision 0 until the window closes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRecord {
    /// `account/window/start`: the upsert key.
    pub key: String,
    pub account: String,
    pub window: WindowSize,
    /// The IANA zone of day and week boundaries and of the histograms (`UTC` without one).
    pub zone: String,
    pub start: String,
    pub end: String,
    pub revision: u32,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Posts in the window that are not deleted: originals, replies and boosts.
    pub posts: u64,
    pub originals: u64,
    pub replies_to_self: u64,
    pub replies_to_others: u64,
    pub boosts: u64,
    pub with_media: u64,
    pub with_cw: u64,
    pub sensitive: u64,
    pub polls: u64,
    /// Edits of the counted posts (each post counts once, however often edited).
    pub edits: u64,
    /// Posts of this window that were deleted (and are no longer counted above).
    pub deletes: u64,
    /// Languages of the account's own posts (boosts left out); `und` when unknown.
    pub languages: BTreeMap<String, u64>,
    /// Client applications, where the server reports them (its local accounts).
    pub applications: BTreeMap<String, u64>,
    /// Posts per hour of day, 0–23, in `zone`.
    pub hours: Vec<u64>,
    /// Posts per weekday, Monday first, in `zone`.
    pub weekdays: Vec<u64>,
    pub tags: TopK,
    pub mentions: TopK,
    pub boosted_accounts: TopK,
    pub text: TextStats,
    pub links: u64,
    pub link_domains: TopK,
    pub engagement: Engagement,
}

/// The `k` most frequent values (count descending, then name), exact: they are
/// counted from every post the window holds; `distinct` and `total` cover all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    pub top: Vec<(String, u64)>,
    pub distinct: u64,
    pub total: u64,
}

/// Text length of the account's own posts (boosts left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextStats {
    pub posts: u64,
    pub chars: Summary,
    pub words: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    pub median: u32,
    pub p90: u32,
}

impl Summary {
    fn of(mut v: Vec<u32>) -> Summary {
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_unstable();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        // Nearest rank.
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Summary { mean: (mean * 100.0).round() / 100.0, median: rank(0.5), p90: rank(0.9) }
    }
}

/// Interactions the account's posts received, summed over the window's posts,
/// each post's counts as last observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    pub replies: u64,
    pub boosts: u64,
    pub favourites: u64,
    /// The latest observation among them, and the server that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_by: Option<String>,
}

/// Counts as a server reported them at a moment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Observed {
    pub at: i64,
    pub by: String,
    pub replies: u64,
    pub boosts: u64,
    pub favourites: u64,
}

/// One counted post, as the record is built from it.
pub struct Counted<'a> {
    pub t: i64,
    pub facts: Option<&'a Facts>,
    pub edits: u64,
    pub deleted: bool,
    pub observed: Option<&'a Observed>,
}

pub struct WindowId<'a> {
    pub account: &'a str,
    pub size: WindowSize,
    pub start: i64,
    pub end: i64,
    pub revision: u32,
    pub is_final: bool,
}

/// Values counted while a record is built: a list searched in order while
/// short (most windows hold a few posts), indexed by a hash map once long (a
/// day's window of an active account counts hundreds of posts' tags); sorted
/// once at the end.
#[derive(Default)]
struct Counts<'a> {
    list: Vec<(&'a str, u64)>,
    index: Option<HashMap<&'a str, usize, foldhash::fast::RandomState>>,
}

impl<'a> Counts<'a> {
    /// Beyond this many values, a hash map finds them.
    const SHORT: usize = 16;

    fn add(&mut self, k: &'a str) {
        if let Some(index) = &mut self.index {
            match index.get(k) {
                Some(&i) => self.list[i].1 += 1,
                None => {
                    index.insert(k, self.list.len());
                    self.list.push((k, 1));
                }
            }
            return;
        }
        match self.list.iter_mut().find(|(s, _)| *s == k) {
            Some((_, n)) => *n += 1,
            None => {
                self.list.push((k, 1));
                if self.list.len() > Self::SHORT {
                    self.index = Some(self.list.iter().enumerate().map(|(i, (s, _))| (*s, i)).collect());
                }
            }
        }
    }

    /// The values by name (as a `BTreeMap<String, _>` orders them).
    fn by_name(mut self) -> Vec<(&'a str, u64)> {
        self.list.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.list
    }

    /// [`TopK`]'s order (count descending, then name), with `distinct` and `total`.
    fn ranked(mut self) -> Ranked<'a> {
        let distinct = self.list.len() as u64;
        let total = self.list.iter().map(|(_, n)| n).sum();
        self.list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        Ranked { list: self.list, distinct, total }
    }
}

/// Counted values in [`TopK`]'s order, not yet cut to `k`.
struct Ranked<'a> {
    list: Vec<(&'a str, u64)>,
    distinct: u64,
    total: u64,
}

impl Ranked<'_> {
    fn top_k(&self, k: usize) -> TopK {
        TopK { top: self.list.iter().take(k).map(|(s, n)| (s.to_string(), *n)).collect(), distinct: self.distinct, total: self.total }
    }

    /// As [`Writer::top`] writes [`Ranked::top_k`].
    fn write(&self, w: &mut Writer, k: usize) {
        w.raw("{\"top\":[");
        for (i, (s, n)) in self.list.iter().take(k).enumerate() {
            w.raw(if i > 0 { ",[" } else { "[" });
            w.str(s);
            w.field(",", *n);
            w.raw("]");
        }
        w.field("],\"distinct\":", self.distinct);
        w.field(",\"total\":", self.total);
        w.raw("}");
    }
}

/// What a window's posts add up to, borrowing their strings: the record is
/// written from it ([`Tally::write_json`], the processor's path: no
/// [`StatsRecord`] built, no string copied) or built from it ([`Tally::into_record`]).
pub struct Tally<'a> {
    /// posts, originals, replies to self, to others, boosts, with media, with
    /// CW, sensitive, polls, edits, deletes: the record's order.
    counters: [u64; 11],
    languages: Vec<(&'a str, u64)>,
    applications: Vec<(&'a str, u64)>,
    hours: [u64; 24],
    weekdays: [u64; 7],
    tags: Ranked<'a>,
    mentions: Ranked<'a>,
    boosted: Ranked<'a>,
    domains: Ranked<'a>,
    chars: Summary,
    words: Summary,
    text_posts: u64,
    links: u64,
    engagement: [u64; 3],
    latest: Option<&'a Observed>,
}

const POSTS: usize = 0;
const ORIGINALS: usize = 1;
const REPLIES_TO_SELF: usize = 2;
const REPLIES_TO_OTHERS: usize = 3;
const BOOSTS: usize = 4;
const WITH_MEDIA: usize = 5;
const WITH_CW: usize = 6;
const SENSITIVE: usize = 7;
const POLLS: usize = 8;
const EDITS: usize = 9;
const DELETES: usize = 10;

/// The record's counters' field names, in [`Tally::counters`]' order.
const COUNTER_FIELDS: [&str; 11] = [
    ",\"posts\":",
    ",\"originals\":",
    ",\"replies_to_self\":",
    ",\"replies_to_others\":",
    ",\"boosts\":",
    ",\"with_media\":",
    ",\"with_cw\":",
    ",\"sensitive\":",
    ",\"polls\":",
    ",\"edits\":",
    ",\"deletes\":",
];

/// Count a window's posts.
pub fn tally<'a>(cal: &Calendar, posts: impl Iterator<Item = Counted<'a>>) -> Tally<'a> {
    let mut c = [0u64; 11];
    let (mut hours, mut weekdays) = ([0u64; 24], [0u64; 7]);
    let (mut tags, mut mentions, mut boosted, mut domains) = (Counts::default(), Counts::default(), Counts::default(), Counts::default());
    let (mut languages, mut applications) = (Counts::default(), Counts::default());
    let (mut chars, mut words) = (Vec::new(), Vec::new());
    let (mut links, mut engagement) = (0, [0u64; 3]);
    let mut latest: Option<&Observed> = None;
    for p in posts {
        if p.deleted {
            c[DELETES] += 1;
            continue;
        }
        let Some(f) = p.facts else { continue };
        c[POSTS] += 1;
        c[EDITS] += p.edits;
        let (h, wd) = cal.hour_and_weekday(p.t);
        hours[h] += 1;
        weekdays[wd] += 1;
        if let Some(app) = &f.app {
            applications.add(app.as_str());
        }
        if let Some(b) = &f.boosted {
            c[BOOSTS] += 1;
            boosted.add(b.as_str());
            continue;
        }
        c[match f.reply {
            0 => ORIGINALS,
            1 => REPLIES_TO_SELF,
            _ => REPLIES_TO_OTHERS,
        }] += 1;
        c[WITH_MEDIA] += f.media as u64;
        c[WITH_CW] += f.cw as u64;
        c[SENSITIVE] += f.sensitive as u64;
        c[POLLS] += f.poll as u64;
        languages.add(f.lang.as_deref().unwrap_or("und"));
        for t in &f.tags {
            tags.add(t.as_str());
        }
        for m in &f.mentions {
            mentions.add(m.as_str());
        }
        for d in &f.domains {
            domains.add(d.as_str());
        }
        links += f.links as u64;
        chars.push(f.chars);
        words.push(f.words);
        if let Some(o) = p.observed {
            engagement[0] += o.replies;
            engagement[1] += o.boosts;
            engagement[2] += o.favourites;
            if latest.is_none_or(|l| (o.at, &o.by) > (l.at, &l.by)) {
                latest = Some(o);
            }
        }
    }
    Tally {
        counters: c,
        languages: languages.by_name(),
        applications: applications.by_name(),
        hours,
        weekdays,
        tags: tags.ranked(),
        mentions: mentions.ranked(),
        boosted: boosted.ranked(),
        domains: domains.ranked(),
        text_posts: chars.len() as u64,
        chars: Summary::of(chars),
        words: Summary::of(words),
        links,
        engagement,
        latest,
    }
}

/// The zone's name in records.
fn zone_name(cal: &Calendar) -> &'static str {
    cal.zone.map(|z| z.name()).unwrap_or("UTC")
}

impl Tally<'_> {
    /// The record's JSON, exactly as `serde_json::to_string(&self.into_record(..))`
    /// writes it (tested), without building the record: serde_json escapes
    /// every field name at run time and a record has sixty; the record's
    /// strings would each be a copy. Strings and the means go through serde_json
    /// when they need it ([`Writer`]).
    pub fn write_json(&self, id: &WindowId<'_>, cal: &Calendar, top_k: usize, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        // The key is `account/window/start`: the account may need escapes,
        // the rest not; the account and the start are copied from it after.
        w.raw("{\"key\":");
        let account_at = w.out.len();
        w.str(id.account);
        w.out.pop();
        let account_end = w.out.len();
        w.raw("/");
        w.raw(id.size.as_str());
        w.raw("/");
        let start_at = w.out.len();
        write_rfc3339(id.start, w.out);
        let start_end = w.out.len();
        w.raw("\",\"account\":");
        w.out.extend_from_within(account_at..account_end);
        w.raw("\",\"window\":\"");
        w.raw(id.size.as_str());
        w.raw("\",\"zone\":");
        w.str(zone_name(cal));
        w.raw(",\"start\":\"");
        w.out.extend_from_within(start_at..start_end);
        w.raw("\",\"end\":\"");
        write_rfc3339(id.end, w.out);
        w.field("\",\"revision\":", id.revision as u64);
        w.raw(if id.is_final { ",\"final\":true" } else { ",\"final\":false" });
        for (name, v) in COUNTER_FIELDS.iter().zip(self.counters) {
            w.field(name, v);
        }
        for (name, m) in [(",\"languages\":{", &self.languages), (",\"applications\":{", &self.applications)] {
            w.raw(name);
            for (i, (k, n)) in m.iter().enumerate() {
                if i > 0 {
                    w.raw(",");
                }
                w.str(k);
                w.field(":", *n);
            }
            w.raw("}");
        }
        w.raw(",\"hours\":");
        w.list(&self.hours);
        w.raw(",\"weekdays\":");
        w.list(&self.weekdays);
        w.raw(",\"tags\":");
        self.tags.write(&mut w, top_k);
        w.raw(",\"mentions\":");
        self.mentions.write(&mut w, top_k);
        w.raw(",\"boosted_accounts\":");
        self.boosted.write(&mut w, top_k);
        w.field(",\"text\":{\"posts\":", self.text_posts);
        w.raw(",\"chars\":");
        w.summary(&self.chars);
        w.raw(",\"words\":");
        w.summary(&self.words);
        w.field("},\"links\":", self.links);
        w.raw(",\"link_domains\":");
        self.domains.write(&mut w, top_k);
        w.field(",\"engagement\":{\"replies\":", self.engagement[0]);
        w.field(",\"boosts\":", self.engagement[1]);
        w.field(",\"favourites\":", self.engagement[2]);
        if let Some(o) = self.latest {
            w.raw(",\"observed_at\":\"");
            write_rfc3339(o.at, w.out);
            w.raw("\",\"observed_by\":");
            w.str(&o.by);
        }
        w.raw("}}");
    }

    /// The record.
    pub fn into_record(self, id: &WindowId<'_>, cal: &Calendar, top_k: usize) -> StatsRecord {
        let start = rfc3339(id.start);
        let c = self.counters;
        let owned = |m: Vec<(&str, u64)>| m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        StatsRecord {
            key: format!("{}/{}/{start}", id.account, id.size.as_str()),
            account: id.account.to_string(),
            window: id.size,
            zone: zone_name(cal).to_string(),
            start,
            end: rfc3339(id.end),
            revision: id.revision,
            is_final: id.is_final,
            posts: c[POSTS],
            originals: c[ORIGINALS],
            replies_to_self: c[REPLIES_TO_SELF],
            replies_to_others: c[REPLIES_TO_OTHERS],
            boosts: c[BOOSTS],
            with_media: c[WITH_MEDIA],
            with_cw: c[WITH_CW],
            sensitive: c[SENSITIVE],
            polls: c[POLLS],
            edits: c[EDITS],
            deletes: c[DELETES],
            languages: owned(self.languages),
            applications: owned(self.applications),
            hours: self.hours.to_vec(),
            weekdays: self.weekdays.to_vec(),
            tags: self.tags.top_k(top_k),
            mentions: self.mentions.top_k(top_k),
            boosted_accounts: self.boosted.top_k(top_k),
            text: TextStats { posts: self.text_posts, chars: self.chars, words: self.words },
            links: self.links,
            link_domains: self.domains.top_k(top_k),
            engagement: Engagement {
                replies: self.engagement[0],
                boosts: self.engagement[1],
                favourites: self.engagement[2],
                observed_at: self.latest.map(|o| rfc3339(o.at)),
                observed_by: self.latest.map(|o| o.by.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record of a window's posts, built (what the written JSON is checked against).
    fn build<'a>(id: WindowId<'_>, cal: &Calendar, top_k: usize, posts: impl Iterator<Item = Counted<'a>>) -> StatsRecord {
        tally(cal, posts).into_record(&id, cal, top_k)
    }

    #[test]
    fn summary_uses_nearest_rank() {
        let s = Summary::of(vec![10, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!((s.mean, s.median, s.p90), (5.5, 5, 9));
        assert_eq!(Summary::of(vec![]), Summary::default());
        assert_eq!(Summary::of(vec![7]).p90, 7);
    }

    /// A post with `n` tags, mentions and domains out of a few shared ones.
    fn facts(n: usize, boosted: bool) -> Facts {
        let names = |prefix: &str| (0..n).map(|i| format!("{prefix}{}", (i * 7) % 23)).collect::<Vec<_>>();
        Facts {
            boosted: boosted.then(|| format!("b{n}@x.example")),
            reply: (n % 3) as u8,
            media: n.is_multiple_of(2),
            cw: n.is_multiple_of(5),
            sensitive: n.is_multiple_of(4),
            poll: n == 3,
            lang: (n % 4 != 1).then(|| ["en", "de", "fr\"x"][n % 3].to_string()),
            app: (!n.is_multiple_of(3)).then(|| format!("App \u{7} {}", n % 2)),
            tags: names("tag"),
            mentions: names("m@\\"),
            domains: names("d.example"),
            links: n as u32,
            chars: (n * 37 % 500) as u32,
            words: (n * 7 % 90) as u32,
        }
    }

    #[test]
    fn the_written_record_is_what_serde_json_writes_of_the_built_one() {
        let all: Vec<Facts> = (0..40).map(|n| facts(n, n % 9 == 4)).collect();
        let observed: Vec<Observed> = (0..40)
            .map(|n| Observed {
                at: 1_767_000_000_000 + n * 61_001,
                by: format!("s{}.example", n % 3),
                replies: n as u64,
                boosts: 1,
                favourites: 2,
            })
            .collect();
        for zone in [None, Some(chrono_tz::Europe::Berlin)] {
            let cal = Calendar { zone };
            for (posts, top_k, account) in
                [(0, 10, "ada@a.example"), (1, 10, "b\"o\\b@x"), (3, 2, "c@c"), (40, 10, "d@d"), (40, 1000, "e@e")]
            {
                let counted = || {
                    (0..posts).map(|i| Counted {
                        t: 1_767_000_000_000 + i as i64 * 1_234_567,
                        facts: (i % 11 != 5).then(|| &all[i]),
                        edits: (i % 4) as u64,
                        deleted: i % 13 == 12,
                        observed: (i % 6 != 1).then(|| &observed[i]),
                    })
                };
                for (start, end, revision, is_final) in [(1_767_000_000_000, 1_767_003_600_000, 0, true), (-86_400_001, 1, 3, false)] {
                    let id = || WindowId { account, size: WindowSize::Day, start, end, revision, is_final };
                    let mut written = Vec::new();
                    tally(&cal, counted()).write_json(&id(), &cal, top_k, &mut written);
                    let built = build(id(), &cal, top_k, counted());
                    assert_eq!(String::from_utf8(written).unwrap(), serde_json::to_string(&built).unwrap(), "{posts} posts, {account}");
                }
            }
        }
    }

    #[test]
    fn top_k_orders_by_count_then_name_and_counts_the_rest() {
        let mut m = Counts::default();
        for (k, n) in [("b", 2), ("a", 2), ("c", 5), ("d", 1)] {
            for _ in 0..n {
                m.add(k);
            }
        }
        let t = m.ranked().top_k(2);
        assert_eq!(t.top, vec![("c".to_string(), 5), ("a".to_string(), 2)]);
        assert_eq!((t.distinct, t.total), (4, 10));
    }
}
