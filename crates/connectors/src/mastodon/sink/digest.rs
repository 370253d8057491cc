//! Digest posts: the `mastodon` channel fed by an `account_stats` processor
//! posts one status per stats record of the configured window size, rendered
//! from a [MiniJinja](https://docs.rs/minijinja) template (Jinja2 syntax) — a
//! weekly summary of an account's activity on a bot account, say.
//!
//! * **Which records.** Final records (`"final": true`) of `digest.window`
//!   with at least `digest.min_posts` posts; early looks at open windows and
//!   other sizes are skipped (counted `skipped`).
//! * **Exactly once.** The channel's map is keyed by the record's upsert key
//!   (`account/window/start`) and holds the digest's id and the revision
//!   posted: a redelivered record changes nothing, a later revision (a late post
//!   corrected the window) edits the digest (`edits = true`, the default), and
//!   every POST carries an `Idempotency-Key` derived from (key, channel,
//!   revision). A crash between a POST and its map entry is covered by that key
//!   for the server's hour (digests carry no attribution line to find them by).
//! * **Template variables**: every field of the record (`account`, `window`,
//!   `zone`, `posts`, `originals`, `replies_to_self`, `replies_to_others`,
//!   `boosts`, `with_media`, `edits`, `deletes`, `languages`, `applications`,
//!   `hours`, `weekdays`, `tags`, `mentions`, `boosted_accounts`, `text`,
//!   `links`, `link_domains`, `engagement`, `revision`, …), plus `replies`
//!   (both kinds), `period` (`2026-11-02` for a day, `week of 2026-11-02`,
//!   `2026-11-02 14:00 UTC` for an hour), `top_languages` and
//!   `top_applications` (`[name, count]` pairs, most first), `busiest_hour`
//!   (0–23, or none) and `busiest_weekday` (`Monday`…, or none). Top lists are
//!   `[name, count]` pairs (`tags.top[0][0]`).
//!
//! The rendered text is cut to the server's `max_characters` on a word
//! boundary. Write the account without a leading `@` and tags without `#`
//! (as the default template does) unless the digest should notify the account
//! and appear in tag timelines.

use std::collections::BTreeMap;

use fedistream_process::stats::StatsRecord;
use serde::{Deserialize, Serialize};

use super::render;

/// The default digest: readable, and within 500 characters for a busy account
/// (tested below).
pub const DEFAULT_TEMPLATE: &str = "\
Activity of {{ account }}, {{ period }}:
{{ posts }} post{% if posts != 1 %}s{% endif %}: {{ originals }} new, {{ replies }} replies, {{ boosts }} boosts\
{% if edits %}, {{ edits }} edited{% endif %}{% if deletes %}, {{ deletes }} deleted{% endif %}.
{% if top_languages %}Languages: {% for l in top_languages[:3] %}{{ l[0] }} {{ l[1] }}{% if not loop.last %}, {% endif %}{% endfor %}
{% endif %}{% if tags.top %}Tags: {% for t in tags.top[:5] %}{{ t[0] }}{% if not loop.last %}, {% endif %}{% endfor %}
{% endif %}{% if busiest_weekday is not none and window != \"day\" %}Most active on {{ busiest_weekday }}s{% if busiest_hour is not none %}, around {{ busiest_hour }}:00{% endif %}.
{% elif busiest_hour is not none %}Most active around {{ busiest_hour }}:00.
{% endif %}Received {{ engagement.replies }} replies, {{ engagement.boosts }} boosts, {{ engagement.favourites }} favourites.";

/// `[channels.NAME.digest]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DigestConfig {
    /// Which records become digests: `hour`, `day` or `week`.
    pub window: String,
    /// MiniJinja (Jinja2) template of the post; see the module docs for the variables.
    pub template: String,
    /// Windows with fewer posts get no digest.
    pub min_posts: u64,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig { window: "week".into(), template: DEFAULT_TEMPLATE.into(), min_posts: 1 }
    }
}

const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

impl DigestConfig {
    /// Reject what can only be a mistake: an unknown window, a template that
    /// does not parse or fails on a sample record. Pure; names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.window.as_str(), "hour" | "day" | "week") {
            return Err(format!("digest.window: `{}` is not hour, day or week", self.window));
        }
        let sample: StatsRecord = serde_json::from_str(SAMPLE).map_err(|e| format!("digest: the sample record: {e}"))?;
        self.render(&sample).map(|_| ()).map_err(|e| format!("digest.template: {e}"))
    }

    /// Whether `r` gets a digest.
    pub fn wants(&self, r: &StatsRecord) -> bool {
        r.is_final && r.window.as_str() == self.window && r.posts >= self.min_posts
    }

    /// The digest text for `r` (not yet cut to the server's limit).
    pub fn render(&self, r: &StatsRecord) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.set_keep_trailing_newline(false);
        let tmpl = env.template_from_str(&self.template).map_err(|e| describe(&e))?;
        tmpl.render(context(r)).map(|s| s.trim().to_string()).map_err(|e| describe(&e))
    }

    /// The status to post: the digest cut to `max_chars`.
    pub fn status(&self, r: &StatsRecord, max_chars: usize) -> Result<String, String> {
        Ok(render::truncate(&self.render(r)?, max_chars))
    }
}

/// MiniJinja's error with its line, without the debug dump.
fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("line {line}: {}", e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string())),
        None => e.to_string(),
    }
}

fn top(m: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = m.iter().map(|(k, n)| (k.clone(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Index of the largest count (the first of equals); `None` when all are 0.
fn busiest(v: &[u64]) -> Option<usize> {
    let max = *v.iter().max()?;
    (max > 0).then(|| v.iter().position(|n| *n == max)).flatten()
}

fn context(r: &StatsRecord) -> minijinja::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    let date = |s: &str| s.get(..10).unwrap_or(s).to_string();
    let period = match r.window.as_str() {
        // Hours are aligned to UTC whatever the zone.
        "hour" => format!("{} {} UTC", date(&r.start), r.start.get(11..16).unwrap_or("")),
        "week" => format!("week of {}", date(&r.start)),
        _ => date(&r.start),
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("replies".into(), (r.replies_to_self + r.replies_to_others).into());
        o.insert("period".into(), period.into());
        o.insert("top_languages".into(), serde_json::to_value(top(&r.languages)).unwrap_or_default());
        o.insert("top_applications".into(), serde_json::to_value(top(&r.applications)).unwrap_or_default());
        o.insert("busiest_hour".into(), busiest(&r.hours).into());
        o.insert("busiest_weekday".into(), busiest(&r.weekdays).map(|d| WEEKDAYS[d % 7]).into());
    }
    minijinja::Value::from_serialize(&v)
}

/// A record the template is tried on at validation.
const SAMPLE: &str = r#"{"key":"ada@social.example/week/2026-11-02T00:00:00Z","account":"ada@social.example",
 "window":"week","zone":"UTC","start":"2026-11-02T00:00:00Z","end":"2026-11-09T00:00:00Z","revision":0,"final":true,
 "posts":5,"originals":3,"replies_to_self":1,"replies_to_others":0,"boosts":1,"with_media":1,"with_cw":0,"sensitive":0,
 "polls":0,"edits":1,"deletes":0,"languages":{"en":4},"applications":{"Phanpy":3,"Web":2},
 "hours":[0,0,0,0,0,0,0,0,2,0,0,0,0,0,0,3,0,0,0,0,0,0,0,0],"weekdays":[5,0,0,0,0,0,0],
 "tags":{"top":[["opensource",2]],"distinct":1,"total":2},"mentions":{"top":[],"distinct":0,"total":0},
 "boosted_accounts":{"top":[["jun@toot.example.net",1]],"distinct":1,"total":1},
 "text":{"posts":4,"chars":{"mean":71.5,"median":66,"p90":98},"words":{"mean":11.0,"median":10,"p90":15}},
 "links":1,"link_domains":{"top":[["news.example",1]],"distinct":1,"total":1},
 "engagement":{"replies":3,"boosts":4,"favourites":21,"observed_at":"2026-11-04T10:00:00Z","observed_by":"social.example"}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy account's week: many posts, languages, long tags, large counts.
    fn busy() -> StatsRecord {
        let mut r: StatsRecord = serde_json::from_str(SAMPLE).unwrap();
        r.account = "a_rather_long_username_here@a-long-instance-name.example.social".into();
        r.posts = 1_234;
        r.originals = 456;
        r.replies_to_self = 321;
        r.replies_to_others = 345;
        r.boosts = 112;
        r.edits = 99;
        r.deletes = 12;
        r.languages = [("en", 500), ("de", 300), ("fr", 200), ("es", 100), ("pt", 50)].into_iter().map(|(k, n)| (k.into(), n)).collect();
        r.tags.top = (0..10).map(|i| (format!("averyveryverylongtagnumber{i}"), 100 - i)).collect();
        r.weekdays = vec![200, 180, 170, 190, 210, 150, 134];
        r.hours = (0..24).map(|h| h * 3).collect();
        r.engagement.replies = 12_345;
        r.engagement.boosts = 67_890;
        r.engagement.favourites = 123_456;
        r
    }

    #[test]
    fn the_default_digest_is_readable_and_within_500_characters_for_a_busy_account() {
        let d = DigestConfig::default();
        assert!(d.validate().is_ok(), "{:?}", d.validate());
        let text = d.render(&busy()).unwrap();
        eprintln!("{text}");
        assert!(text.chars().count() <= 500, "{} characters:\n{text}", text.chars().count());
        assert_eq!(
            text,
            "Activity of a_rather_long_username_here@a-long-instance-name.example.social, week of 2026-11-02:\n\
             1234 posts: 456 new, 666 replies, 112 boosts, 99 edited, 12 deleted.\n\
             Languages: en 500, de 300, fr 200\n\
             Tags: averyveryverylongtagnumber0, averyveryverylongtagnumber1, averyveryverylongtagnumber2, averyveryverylongtagnumber3, averyveryverylongtagnumber4\n\
             Most active on Fridays, around 23:00.\n\
             Received 12345 replies, 67890 boosts, 123456 favourites."
        );
        assert!(!text.contains('@') || !text.contains(" @"), "nobody is mentioned");
        assert!(!text.contains('#'), "no hashtags");
        // A quiet day: no empty lines, no histogram line.
        let mut quiet: StatsRecord = serde_json::from_str(SAMPLE).unwrap();
        quiet.window = fedistream_process::stats::WindowSize::Day;
        quiet.posts = 1;
        quiet.languages.clear();
        quiet.tags.top.clear();
        quiet.hours = vec![0; 24];
        quiet.weekdays = vec![0; 7];
        let text = d.render(&quiet).unwrap();
        assert_eq!(
            text,
            "Activity of ada@social.example, 2026-11-02:\n1 post: 3 new, 1 replies, 1 boosts, 1 edited.\nReceived 3 replies, 4 boosts, 21 favourites."
        );
    }

    #[test]
    fn which_records_get_a_digest_and_template_errors_name_the_line() {
        let d = DigestConfig::default();
        let mut r: StatsRecord = serde_json::from_str(SAMPLE).unwrap();
        assert!(d.wants(&r));
        r.is_final = false;
        assert!(!d.wants(&r), "an early look at an open window");
        r.is_final = true;
        r.window = fedistream_process::stats::WindowSize::Day;
        assert!(!d.wants(&r), "another window size");
        let bad = DigestConfig { template: "ok\n{% for x in %}".into(), ..Default::default() };
        let e = bad.validate().unwrap_err();
        assert!(e.starts_with("digest.template: line 2"), "{e}");
        let e = DigestConfig { window: "month".into(), ..Default::default() }.validate().unwrap_err();
        assert!(e.contains("month"), "{e}");
        let custom =
            DigestConfig { template: "{{ account }}: {{ posts }} posts, top tag {{ tags.top[0][0] }}".into(), ..Default::default() };
        assert_eq!(custom.render(&serde_json::from_str(SAMPLE).unwrap()).unwrap(), "ada@social.example: 5 posts, top tag opensource");
        assert_eq!(custom.status(&serde_json::from_str(SAMPLE).unwrap(), 20).unwrap().chars().count(), 20, "cut to the server's limit");
    }
}
