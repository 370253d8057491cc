//! What tests do to the server's content: post, edit, delete, and read back.
//!
//! Each operation updates the store, renders the stream payload and broadcasts
//! while holding the store lock (sending never blocks), so streams see events in
//! id order even when tests post from several threads, and never before the REST
//! API can serve the status.

use chrono::Utc;

use super::json;
use super::state::{IdKey, Media, Scope, Shared, Status, Store};
use super::types::{AccountOpts, NewStatus, Posted};

impl Shared {
    pub fn post(&self, username: &str, new: NewStatus) -> Posted {
        let account_id = self.add_account(username, AccountOpts::default());
        let mut store = self.store();
        let now = json::truncate_millis(Utc::now());
        let id = store.ids.next(now);
        let in_reply_to_account_id = new.in_reply_to_id.as_deref().and_then(|r| store.status(r)).map(|s| s.account_id.clone());
        let reblog_of = new.reblog_of.filter(|r| store.status(r).is_some());
        let media = new.media.into_iter().map(|(kind, description)| Media { id: store.ids.next(now), kind, description }).collect();
        let is_boost = reblog_of.is_some();
        let remote = store.accounts.get(&account_id).is_some_and(|a| a.opts.domain.is_some());
        let status = Status {
            id: id.clone(),
            account_id: account_id.clone(),
            created_at: new.created_at.map(json::truncate_millis).unwrap_or(now),
            edited_at: None,
            content: if is_boost { String::new() } else { new.content_html },
            visibility: new.visibility,
            spoiler_text: if is_boost { String::new() } else { new.spoiler_text },
            sensitive: !is_boost && new.sensitive,
            language: if is_boost { None } else { new.language },
            in_reply_to_id: new.in_reply_to_id.filter(|_| !is_boost),
            in_reply_to_account_id: in_reply_to_account_id.filter(|_| !is_boost),
            reblog_of,
            media: if is_boost { Vec::new() } else { media },
            tags: if is_boost { Vec::new() } else { new.tags },
            replies_count: 0,
            reblogs_count: 0,
            remote,
            favourites_count: 0,
        };
        self.publish(&mut store, status)
    }

    /// Stores a new status, bumps the counts of what it replies to or boosts, and
    /// broadcasts `update` (unless it is `direct`). The caller holds the store lock.
    pub(crate) fn publish(&self, store: &mut Store, status: Status) -> Posted {
        let id = status.id.clone();
        let bump = |store: &mut Store, target: &Option<String>, replies: bool| {
            if let Some(target) = target.as_deref() {
                if let Some(t) = store.statuses.get_mut(&IdKey::new(target)) {
                    if replies {
                        t.replies_count += 1
                    } else {
                        t.reblogs_count += 1
                    }
                }
            }
        };
        bump(store, &status.in_reply_to_id, true);
        bump(store, &status.reblog_of, false);
        let scope = scope_of(&status);
        let broadcastable = status.reader_visible();
        store.insert(status);
        let posted = json::posted(self, store, &id);
        let payload = json::status_payload(self, store, &id);
        if broadcastable {
            if let Some(payload) = payload {
                self.broadcast("update", payload, scope);
            }
        }
        posted
    }

    pub fn edit(&self, id: &str, new_content_html: &str) -> bool {
        let mut store = self.store();
        let Some(status) = store.statuses.get_mut(&IdKey::new(id)) else {
            return false;
        };
        status.content = new_content_html.to_owned();
        status.edited_at = Some(json::truncate_millis(Utc::now()));
        *self.ledger().edits.entry(id.to_owned()).or_default() += 1;
        let scope = scope_of(status);
        let broadcastable = status.reader_visible();
        let payload = json::status_payload(self, &store, id);
        if let (true, Some(payload)) = (broadcastable, payload) {
            self.broadcast("status.update", payload, scope);
        }
        true
    }

    /// Sets a status's interaction counts (others replied, boosted and
    /// favourited it on other servers). Nothing is streamed: Mastodon does not
    /// stream count changes to followers. Returns false if the id is unknown.
    pub fn set_counts(&self, id: &str, replies: u64, reblogs: u64, favourites: u64) -> bool {
        let mut store = self.store();
        let Some(status) = store.statuses.get_mut(&IdKey::new(id)) else {
            return false;
        };
        (status.replies_count, status.reblogs_count, status.favourites_count) = (replies, reblogs, favourites);
        true
    }

    pub fn delete(&self, id: &str) -> bool {
        let mut store = self.store();
        let Some(status) = store.remove(&IdKey::new(id)) else {
            return false;
        };
        let mut removed = vec![(status.account_id.clone(), status.id.clone())];
        // Deleting a post removes the boosts of it too, each with its own delete.
        let boosts: Vec<IdKey> =
            store.statuses.iter().filter(|(_, s)| s.reblog_of.as_deref() == Some(id)).map(|(k, _)| k.clone()).collect();
        for key in boosts {
            if let Some(boost) = store.remove(&key) {
                removed.push((boost.account_id, boost.id));
            }
        }
        for (target, replies) in [(&status.in_reply_to_id, true), (&status.reblog_of, false)] {
            if let Some(t) = target.as_deref().and_then(|t| store.statuses.get_mut(&IdKey::new(t))) {
                let count = if replies { &mut t.replies_count } else { &mut t.reblogs_count };
                *count = count.saturating_sub(1);
            }
        }
        let mut ledger = self.ledger();
        for (account_id, gone) in removed {
            ledger.deleted.entry(account_id).or_default().push(gone.clone());
            let scope = Scope { everywhere: true, ..scope_of(&status) };
            self.broadcast("delete", gone, scope);
        }
        true
    }

    pub fn statuses_of(&self, username: &str) -> Vec<serde_json::Value> {
        let store = self.store();
        let Some(account_id) = store.account_id(username) else {
            return Vec::new();
        };
        store.statuses_by(&account_id).filter(|s| s.reader_visible()).map(|s| json::status(self, &store, s, json::Viewer::Reader)).collect()
    }
}

pub(crate) fn scope_of(status: &Status) -> Scope {
    let reply_to_other = status.in_reply_to_account_id.as_deref().is_some_and(|a| a != status.account_id)
        || (status.in_reply_to_id.is_some() && status.in_reply_to_account_id.is_none());
    Scope {
        public: status.visibility == "public" && status.reblog_of.is_none() && !reply_to_other,
        tagged: status.visibility == "public" && status.reblog_of.is_none(),
        tags: status.tags.iter().map(|t| t.to_lowercase()).collect(),
        everywhere: false,
        local: !status.remote,
        account_id: status.account_id.clone(),
        lists: Vec::new(),
        disabled: Vec::new(),
    }
}
