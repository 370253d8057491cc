//! One event at a time: decide (loop protection, filters, the map), then post,
//! boost, edit or delete on the target, and record what was done in the map
//! right after the server confirmed it.

use std::time::Instant;

use fedistream_core::event::{Event, EventKind};
use fedistream_core::log::StatePut;
use fedistream_core::post::{Post, Visibility};
use fedistream_core::LogRecord;
use fedistream_process::stats::TopicRecord;

use super::config::{MediaMode, Mode};
use super::{media, render, thread_key, Failure, Mapped, MastodonSink, Opened};
use crate::mastodon::client::StatusForm;

/// The state `open` set up; a macro so that only the field is borrowed (the
/// pacer is mutated while it is in use). `write` checks that `open` ran before
/// calling in here.
macro_rules! opened {
    ($s:expr) => {
        $s.opened.as_ref().expect("opened before write")
    };
}

impl MastodonSink {
    pub(super) async fn handle(&mut self, ev: &Event) -> Result<(), Failure> {
        match (ev.kind, &ev.post) {
            (EventKind::Deleted, _) | (_, None) => self.on_delete(ev).await,
            (_, Some(post)) => {
                if let Some(why) = self.skip_reason(ev, post) {
                    tracing::trace!(key = %ev.key, why, "Not republished");
                    opened!(self).status.count("skipped", 1);
                    return Ok(());
                }
                let o = opened!(self);
                let fp = ev.fingerprint();
                let mapped = match o.get(&ev.key).await? {
                    Some(m) => Some(m),
                    None => self.adopt_reconciled(ev, post).await?,
                };
                match mapped {
                    Some(m) if m.fp == fp => Ok(()), // already published (redelivery)
                    // A created event redelivered after its updates must not edit back.
                    Some(_) if ev.kind == EventKind::Created => Ok(()),
                    Some(m) if !self.cfg.edits || m.boost_of.is_some() => {
                        let o = opened!(self);
                        o.put(vec![map_put(o, &ev.key, &Mapped { fp, ..m })?]).await
                    }
                    Some(m) => self.edit(ev, post, m, fp).await,
                    // An edit of history the channel never published (made
                    // before it started): not a new post.
                    None if ev.kind == EventKind::Updated && post.created_at.is_some_and(|c| c < opened!(self).started_at) => {
                        tracing::debug!(key = %ev.key, "An edit of a post from before the channel started; not republished");
                        opened!(self).status.count("skipped", 1);
                        Ok(())
                    }
                    None => self.publish(ev, post, fp).await,
                }
            }
        }
    }

    /// Loop protection, audience and filters.
    fn skip_reason(&self, ev: &Event, post: &Post) -> Option<&'static str> {
        let o = opened!(self);
        let same_account = ev.account.eq_ignore_ascii_case(&o.target_acct)
            || post.account.acct.eq_ignore_ascii_case(&o.target_acct)
            || (ev.instance.eq_ignore_ascii_case(&o.target_host) && post.account.id == o.target_id)
            || (o.target_url.is_some() && post.account.url == o.target_url);
        if same_account {
            return Some("a post of the target account itself");
        }
        if post.boost_of.as_ref().is_some_and(|b| b.account.eq_ignore_ascii_case(&o.target_acct)) {
            return Some("a boost of the target account");
        }
        if render::carries_marker(post) {
            return Some("already mirrored (carries the attribution marker)");
        }
        if matches!(post.visibility, Visibility::Private | Visibility::Direct | Visibility::Other(_)) {
            return Some("not public");
        }
        if self.cfg.skip_content_warned && !post.spoiler_text.is_empty() {
            return Some("content warning");
        }
        if !self.filter.matches(ev) {
            return Some("filtered out");
        }
        None
    }

    /// A repost found by reconciliation becomes a map entry instead of a new post.
    async fn adopt_reconciled(&self, ev: &Event, post: &Post) -> Result<Option<Mapped>, Failure> {
        let o = opened!(self);
        let found = [render::source_url(post), post.uri.as_str()]
            .into_iter()
            .chain(post.boost_of.iter().flat_map(|b| b.url.iter().map(String::as_str).chain([b.uri.as_str()])))
            .find_map(|k| o.reconciled.get(k));
        let Some(found) = found else { return Ok(None) };
        // A created event adopts as is; an update was made after it: edit it.
        let fp = if ev.kind == EventKind::Created { ev.fingerprint() } else { String::new() };
        let m = Mapped { fp, ..found.clone() };
        tracing::info!(key = %ev.key, target_id = %m.id, "Found an earlier repost on the target; not posting again");
        o.put(vec![map_put(o, &ev.key, &m)?, thread_put(o, ev, &m.id)?]).await?;
        o.status.count("reconciled", 1);
        Ok(Some(m))
    }

    fn check_posts_budget(&mut self) -> Result<(), Failure> {
        self.pacer.posts.check(Instant::now()).map_err(|d| Failure::Paced(d, "posting"))?;
        match self.client.limiter().blocked_for() {
            Some(d) => Err(Failure::Paced(d, "the server's rate limit")),
            None => Ok(()),
        }
    }

    async fn publish(&mut self, ev: &Event, post: &Post, fp: String) -> Result<(), Failure> {
        self.check_posts_budget()?;
        if self.cfg.mode == Mode::Boost || post.boost_of.is_some() {
            return self.boost(ev, post, fp).await;
        }
        let in_reply_to_id = match &post.in_reply_to {
            Some(r) if is_self_reply(post) => opened!(self).get(&thread_key(&ev.instance, &r.id)).await?.map(|m| m.id),
            _ => None,
        };
        let (media_ids, links) = match self.cfg.media {
            MediaMode::Reupload if !post.media.is_empty() => media::reupload(&self.client, &post.media, &mut self.pacer.media).await?,
            MediaMode::Link => (Vec::new(), post.media.iter().filter_map(media::media_url).map(media::link_line).collect()),
            _ => (Vec::new(), Vec::new()),
        };
        let o = opened!(self);
        let mut form = render::render(post, &self.cfg, o.max_chars, &links);
        form.in_reply_to_id = in_reply_to_id;
        form.media_ids = media_ids.clone();
        let key = render::idempotency_key(&ev.key, &o.channel, &fp);
        let posted = self.client.post_status(&form, &key).await?;
        self.pacer.posts.take(Instant::now());
        if o.failpoint {
            // Test-only (see the module docs): the crash window between POST and map write.
            std::process::abort();
        }
        let m = Mapped { id: posted.id, fp, media: media_ids, boost_of: None };
        o.put(vec![map_put(o, &ev.key, &m)?, thread_put(o, ev, &m.id)?]).await?;
        o.status.count("posted", 1);
        tracing::debug!(key = %ev.key, target_id = %m.id, "Republished");
        Ok(())
    }

    async fn boost(&mut self, ev: &Event, post: &Post, fp: String) -> Result<(), Failure> {
        let url = match &post.boost_of {
            Some(b) => b.url.clone().unwrap_or_else(|| b.uri.clone()),
            None => render::source_url(post).to_string(),
        };
        let Some(found) = self.client.search_status(&url).await? else {
            return Err(Failure::Reject(format!("cannot resolve {url} on the target server")));
        };
        let visibility = (self.cfg.visibility != "direct").then_some(self.cfg.visibility.as_str());
        let wrapper = self.client.reblog(&found.id, visibility).await?;
        self.pacer.posts.take(Instant::now());
        let o = opened!(self);
        let m = Mapped { id: wrapper.id, fp, media: Vec::new(), boost_of: Some(found.id) };
        o.put(vec![map_put(o, &ev.key, &m)?]).await?;
        o.status.count("boosted", 1);
        Ok(())
    }

    async fn edit(&mut self, ev: &Event, post: &Post, m: Mapped, fp: String) -> Result<(), Failure> {
        self.check_posts_budget()?;
        let links: Vec<String> = match self.cfg.media {
            MediaMode::Link => post.media.iter().filter_map(media::media_url).map(media::link_line).collect(),
            _ => Vec::new(),
        };
        let o = opened!(self);
        let mut form = render::render(post, &self.cfg, o.max_chars, &links);
        form.media_ids = m.media.clone();
        match self.client.edit_status(&m.id, &form).await {
            Ok(_) => {}
            Err(e) if matches!(e.status(), Some(404 | 410)) => {
                // Someone deleted the repost on the target: respect that.
                tracing::info!(key = %ev.key, target_id = %m.id, "The repost is gone from the target; not editing");
                return o.put(vec![StatePut::delete(&o.ns, ev.key.clone())]).await;
            }
            Err(e) => return Err(e.into()),
        }
        self.pacer.posts.take(Instant::now());
        let o = opened!(self);
        o.put(vec![map_put(o, &ev.key, &Mapped { fp, ..m })?]).await?;
        o.status.count("edited", 1);
        Ok(())
    }

    async fn on_delete(&mut self, ev: &Event) -> Result<(), Failure> {
        if !self.cfg.deletes {
            return Ok(());
        }
        let Some(m) = opened!(self).get(&ev.key).await? else { return Ok(()) };
        self.pacer.deletes.check(Instant::now()).map_err(|d| Failure::Paced(d, "deleting"))?;
        if let Some(d) = self.client.limiter().blocked_for() {
            return Err(Failure::Paced(d, "the server's rate limit"));
        }
        let res = match &m.boost_of {
            Some(orig) => self.client.unreblog(orig).await,
            None => self.client.delete_status(&m.id).await,
        };
        match res {
            Ok(()) => self.pacer.deletes.take(Instant::now()),
            Err(e) if matches!(e.status(), Some(404 | 410)) => {} // already gone
            Err(e) => return Err(e.into()),
        }
        let o = opened!(self);
        o.put(vec![StatePut::delete(&o.ns, ev.key.clone()), StatePut::delete(&o.ns, thread_key(&ev.instance, &ev.status_id))]).await?;
        o.status.count("deleted", 1);
        Ok(())
    }
}

impl MastodonSink {
    /// One stats record: post its digest, edit it for a later revision, or
    /// skip it (see [`super::digest`]).
    pub(super) async fn handle_digest(&mut self, rec: &LogRecord) -> Result<(), Failure> {
        let Some(digest) = self.cfg.digest.clone() else { return Ok(()) };
        let r = match TopicRecord::parse(&rec.payload)
            .map_err(|e| Failure::Reject(format!("not a stats record (a digest channel takes an account_stats processor's output): {e}")))?
        {
            TopicRecord::Account(r) => r,
            // Digests are of accounts; the per-instance and per-source totals are not posted.
            TopicRecord::Totals(_) => {
                opened!(self).status.count("skipped", 1);
                return Ok(());
            }
        };
        if !digest.wants(&r) {
            opened!(self).status.count("skipped", 1);
            return Ok(());
        }
        let version = r.revision.to_string();
        let mapped = opened!(self).get(&r.key).await?;
        // The revision posted, or a later one: a redelivery (records are
        // upserts, so an older revision must not edit the digest back).
        if mapped.as_ref().is_some_and(|m| m.fp.parse::<u32>().is_ok_and(|posted| posted >= r.revision)) {
            return Ok(());
        }
        if mapped.is_some() && !self.cfg.edits {
            return Ok(());
        }
        self.check_posts_budget()?;
        let o = opened!(self);
        let text = digest.status(&r, o.max_chars).map_err(|e| Failure::Reject(format!("digest.template: {e}")))?;
        let form = StatusForm {
            status: text,
            media_ids: Vec::new(),
            in_reply_to_id: None,
            sensitive: false,
            spoiler_text: String::new(),
            visibility: Some(self.cfg.visibility.clone()),
            language: None,
        };
        let edited = mapped.is_some();
        let id = match mapped {
            Some(m) => match self.client.edit_status(&m.id, &form).await {
                Ok(_) => m.id,
                Err(e) if matches!(e.status(), Some(404 | 410)) => {
                    // Someone deleted the digest on the target: respect that.
                    tracing::info!(key = %r.key, target_id = %m.id, "The digest is gone from the target; not editing");
                    let o = opened!(self);
                    return o.put(vec![StatePut::delete(&o.ns, r.key.clone())]).await;
                }
                Err(e) => return Err(e.into()),
            },
            None => {
                let key = render::idempotency_key(&r.key, &o.channel, &version);
                self.client.post_status(&form, &key).await?.id
            }
        };
        self.pacer.posts.take(Instant::now());
        let o = opened!(self);
        o.put(vec![map_put(o, &r.key, &Mapped { id: id.clone(), fp: version, media: Vec::new(), boost_of: None })?]).await?;
        o.status.count(if edited { "edited" } else { "posted" }, 1);
        tracing::debug!(key = %r.key, target_id = %id, revision = r.revision, "Digest posted");
        Ok(())
    }
}

/// A reply to the author's own post (a thread).
fn is_self_reply(post: &Post) -> bool {
    post.in_reply_to.as_ref().is_some_and(|r| {
        r.account_id.as_deref() == Some(post.account.id.as_str())
            || r.account.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(&post.account.acct))
    })
}

fn map_put(o: &Opened, key: &str, m: &Mapped) -> Result<StatePut, Failure> {
    let v = serde_json::to_string(m).map_err(|e| Failure::Reject(format!("cannot encode the map entry: {e}")))?;
    Ok(StatePut::set(&o.ns, key.to_string(), v))
}

fn thread_put(o: &Opened, ev: &Event, target_id: &str) -> Result<StatePut, Failure> {
    let m = Mapped { id: target_id.to_string(), ..Default::default() };
    map_put(o, &thread_key(&ev.instance, &ev.status_id), &m)
}
