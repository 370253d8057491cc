//! The stats record: one account's activity in one window, computed from the
//! facts of the posts the window holds. Its fields are in a fixed order and its
//! maps are sorted, so the same input always gives the same bytes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::facts::Facts;
use super::json::Writer;
use super::window::{rfc3339, Calendar, WindowSize};

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

impl StatsRecord {
    /// The record's JSON, exactly as `serde_json::to_string(self)` writes it,
    /// without serde: serde_json escapes every field name at run time, and a
    /// record has sixty of them. Strings and the means go through serde_json.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.raw("{\"key\":");
        w.str(&self.key);
        w.raw(",\"account\":");
        w.str(&self.account);
        w.raw(",\"window\":\"");
        w.raw(self.window.as_str());
        w.raw("\",\"zone\":");
        w.str(&self.zone);
        w.raw(",\"start\":");
        w.str(&self.start);
        w.raw(",\"end\":");
        w.str(&self.end);
        w.field(",\"revision\":", self.revision as u64);
        w.raw(if self.is_final { ",\"final\":true" } else { ",\"final\":false" });
        for (name, v) in [
            (",\"posts\":", self.posts),
            (",\"originals\":", self.originals),
            (",\"replies_to_self\":", self.replies_to_self),
            (",\"replies_to_others\":", self.replies_to_others),
            (",\"boosts\":", self.boosts),
            (",\"with_media\":", self.with_media),
            (",\"with_cw\":", self.with_cw),
            (",\"sensitive\":", self.sensitive),
            (",\"polls\":", self.polls),
            (",\"edits\":", self.edits),
            (",\"deletes\":", self.deletes),
        ] {
            w.field(name, v);
        }
        w.raw(",\"languages\":");
        w.map(&self.languages);
        w.raw(",\"applications\":");
        w.map(&self.applications);
        w.raw(",\"hours\":");
        w.list(&self.hours);
        w.raw(",\"weekdays\":");
        w.list(&self.weekdays);
        w.raw(",\"tags\":");
        w.top(&self.tags);
        w.raw(",\"mentions\":");
        w.top(&self.mentions);
        w.raw(",\"boosted_accounts\":");
        w.top(&self.boosted_accounts);
        w.field(",\"text\":{\"posts\":", self.text.posts);
        w.raw(",\"chars\":");
        w.summary(&self.text.chars);
        w.raw(",\"words\":");
        w.summary(&self.text.words);
        w.field("},\"links\":", self.links);
        w.raw(",\"link_domains\":");
        w.top(&self.link_domains);
        let e = &self.engagement;
        w.field(",\"engagement\":{\"replies\":", e.replies);
        w.field(",\"boosts\":", e.boosts);
        w.field(",\"favourites\":", e.favourites);
        if let Some(at) = &e.observed_at {
            w.raw(",\"observed_at\":");
            w.str(at);
        }
        if let Some(by) = &e.observed_by {
            w.raw(",\"observed_by\":");
            w.str(by);
        }
        w.raw("}}");
    }
}

/// The `k` most frequent values (count descending, then name), exact: they are
/// counted from every post the window holds; `distinct` and `total` cover all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    pub top: Vec<(String, u64)>,
    pub distinct: u64,
    pub total: u64,
}

impl TopK {
    fn of(counts: Counts<'_>, k: usize) -> TopK {
        let distinct = counts.len() as u64;
        let total = counts.values().sum();
        let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        // (Copied out only the `k` listed.)
        TopK { top: v.into_iter().take(k).map(|(s, n)| (s.to_string(), n)).collect(), distinct, total }
    }
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

/// Values counted while a record is built (hashed: a day's window of an
/// active account counts hundreds of posts' tags and languages; the record
/// sorts them once at the end).
type Counts<'a> = HashMap<&'a str, u64, foldhash::fast::RandomState>;

pub fn build<'a>(id: WindowId<'_>, cal: &Calendar, top_k: usize, posts: impl Iterator<Item = Counted<'a>>) -> StatsRecord {
    let start = rfc3339(id.start);
    let mut r = StatsRecord {
        key: format!("{}/{}/{start}", id.account, id.size.as_str()),
        account: id.account.to_string(),
        window: id.size,
        zone: cal.zone.map(|z| z.name().to_string()).unwrap_or_else(|| "UTC".into()),
        start,
        end: rfc3339(id.end),
        revision: id.revision,
        is_final: id.is_final,
        posts: 0,
        originals: 0,
        replies_to_self: 0,
        replies_to_others: 0,
        boosts: 0,
        with_media: 0,
        with_cw: 0,
        sensitive: 0,
        polls: 0,
        edits: 0,
        deletes: 0,
        languages: BTreeMap::new(),
        applications: BTreeMap::new(),
        hours: vec![0; 24],
        weekdays: vec![0; 7],
        tags: TopK::default(),
        mentions: TopK::default(),
        boosted_accounts: TopK::default(),
        text: TextStats::default(),
        links: 0,
        link_domains: TopK::default(),
        engagement: Engagement::default(),
    };
    let (mut tags, mut mentions, mut boosted, mut domains) = (Counts::default(), Counts::default(), Counts::default(), Counts::default());
    let (mut languages, mut applications) = (Counts::default(), Counts::default());
    let (mut chars, mut words) = (Vec::new(), Vec::new());
    let mut latest: Option<&Observed> = None;
    for p in posts {
        if p.deleted {
            r.deletes += 1;
            continue;
        }
        let Some(f) = p.facts else { continue };
        r.posts += 1;
        r.edits += p.edits;
        let (h, wd) = cal.hour_and_weekday(p.t);
        r.hours[h] += 1;
        r.weekdays[wd] += 1;
        if let Some(app) = &f.app {
            *applications.entry(app.as_str()).or_default() += 1;
        }
        if let Some(b) = &f.boosted {
            r.boosts += 1;
            *boosted.entry(b.as_str()).or_default() += 1;
            continue;
        }
        match f.reply {
            0 => r.originals += 1,
            1 => r.replies_to_self += 1,
            _ => r.replies_to_others += 1,
        }
        r.with_media += f.media as u64;
        r.with_cw += f.cw as u64;
        r.sensitive += f.sensitive as u64;
        r.polls += f.poll as u64;
        *languages.entry(f.lang.as_deref().unwrap_or("und")).or_default() += 1;
        for t in &f.tags {
            *tags.entry(t.as_str()).or_default() += 1;
        }
        for m in &f.mentions {
            *mentions.entry(m.as_str()).or_default() += 1;
        }
        for d in &f.domains {
            *domains.entry(d.as_str()).or_default() += 1;
        }
        r.links += f.links as u64;
        chars.push(f.chars);
        words.push(f.words);
        if let Some(o) = p.observed {
            r.engagement.replies += o.replies;
            r.engagement.boosts += o.boosts;
            r.engagement.favourites += o.favourites;
            if latest.is_none_or(|l| (o.at, &o.by) > (l.at, &l.by)) {
                latest = Some(o);
            }
        }
    }
    r.languages = languages.into_iter().map(|(k, n): (&str, u64)| (k.to_string(), n)).collect();
    r.applications = applications.into_iter().map(|(k, n): (&str, u64)| (k.to_string(), n)).collect();
    r.engagement.observed_at = latest.map(|o| rfc3339(o.at));
    r.engagement.observed_by = latest.map(|o| o.by.clone());
    r.text = TextStats { posts: chars.len() as u64, chars: Summary::of(chars), words: Summary::of(words) };
    r.tags = TopK::of(tags, top_k);
    r.mentions = TopK::of(mentions, top_k);
    r.boosted_accounts = TopK::of(boosted, top_k);
    r.link_domains = TopK::of(domains, top_k);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let s = Summary::of(vec![10, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!((s.mean, s.median, s.p90), (5.5, 5, 9));
        assert_eq!(Summary::of(vec![]), Summary::default());
        assert_eq!(Summary::of(vec![7]).p90, 7);
    }

    #[test]
    fn top_k_orders_by_count_then_name_and_counts_the_rest() {
        let m: Counts = [("b", 2), ("a", 2), ("c", 5), ("d", 1)].into_iter().collect();
        let t = TopK::of(m, 2);
        assert_eq!(t.top, vec![("c".to_string(), 5), ("a".to_string(), 2)]);
        assert_eq!((t.distinct, t.total), (4, 10));
    }
}
