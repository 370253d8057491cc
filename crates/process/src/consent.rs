//! May this post be republished? Visibility and the author's opt-outs.
//!
//! This module owns the consent rule applied to every normalised [`Post`] before it
//! reaches the log: only `public` posts pass (plus `unlisted` when a source allows
//! it); `private`, `direct` and any visibility we do not know (GoToSocial
//! `mutuals_only`, Akkoma `local`/`list`) never do. Unless the followed account is
//! *owned* by the operator (they consented by configuring it), an author who set
//! `noindex` or put `#nobot`, `#noindex` or `#nobridge` in their bio is skipped.
//! What to do with a skip (count it, log it) is the caller's business; which posts
//! a channel wants is [`crate::filter`]'s.
//!
//! Boosts: a boost is checked as the booster's post. Its visibility is the
//! wrapper's (the Announce), and the account whose `noindex`/bio tags are checked is
//! the booster's ([`Post::account`]). The boosted author's own opt-outs are not
//! visible here: [`fedistream_core::post::BoostOf`] carries only their acct, and
//! the boost itself is republished as a reference (`boost_of` uri/url), not as a
//! copy of their text.

use fedistream_core::post::{Post, Visibility};

/// Why a post was not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not public (or unlisted when allowed); carries the visibility as sent.
    Visibility(String),
    /// The author's account has `noindex: true`.
    Noindex,
    /// The author's bio has this consent hashtag (`"nobot"`, `"noindex"`, `"nobridge"`).
    BioTag(&'static str),
}

impl SkipReason {
    /// A short, fixed label (suitable for a metric label or a log field).
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::Visibility(_) => "visibility",
            SkipReason::Noindex => "noindex",
            SkipReason::BioTag("nobot") => "bio_nobot",
            SkipReason::BioTag("noindex") => "bio_noindex",
            SkipReason::BioTag("nobridge") => "bio_nobridge",
            SkipReason::BioTag(_) => "bio_tag",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Visibility(v) => write!(f, "visibility `{v}` is not published"),
            SkipReason::Noindex => f.write_str("the author set noindex"),
            SkipReason::BioTag(t) => write!(f, "the author's bio has #{t}"),
        }
    }
}

/// The consent rule for one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsentPolicy {
    /// Also publish `unlisted` posts.
    pub allow_unlisted: bool,
    /// The followed accounts belong to the operator: their `noindex` and bio tags
    /// do not stop publication. Visibility still does.
    pub owned: bool,
}

impl ConsentPolicy {
    pub fn check(&self, post: &Post) -> Result<(), SkipReason> {
        match &post.visibility {
            Visibility::Public => {}
            Visibility::Unlisted if self.allow_unlisted => {}
            other => return Err(SkipReason::Visibility(other.as_str().to_owned())),
        }
        if self.owned {
            return Ok(());
        }
        let account = &post.account;
        if account.noindex == Some(true) {
            return Err(SkipReason::Noindex);
        }
        let tags = account.bio_tags;
        if tags.nobot {
            return Err(SkipReason::BioTag("nobot"));
        }
        if tags.noindex {
            return Err(SkipReason::BioTag("noindex"));
        }
        if tags.nobridge {
            return Err(SkipReason::BioTag("nobridge"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{parse_and_normalize, NormalizeContext};
    use chrono::Utc;
    use fedistream_core::post::{BioTags, Via};

    fn post(visibility: &str) -> Post {
        let json = format!(r#"{{"id":"1","uri":"u","visibility":"{visibility}","account":{{"id":"9","acct":"a@b"}}}}"#);
        let ctx = NormalizeContext { instance: "b", via: Via::Stream, received_at: Utc::now() };
        parse_and_normalize(&json, &ctx).unwrap()
    }

    const OPEN: ConsentPolicy = ConsentPolicy { allow_unlisted: false, owned: false };

    #[test]
    fn visibility_rules() {
        assert_eq!(OPEN.check(&post("public")), Ok(()));
        assert_eq!(OPEN.check(&post("unlisted")), Err(SkipReason::Visibility("unlisted".into())));
        let unlisted_ok = ConsentPolicy { allow_unlisted: true, owned: false };
        assert_eq!(unlisted_ok.check(&post("unlisted")), Ok(()));
        let everything = ConsentPolicy { allow_unlisted: true, owned: true };
        for v in ["private", "direct", "mutuals_only", "local", ""] {
            let err = everything.check(&post(v)).unwrap_err();
            assert_eq!(err, SkipReason::Visibility(v.into()));
            assert_eq!(err.as_str(), "visibility");
        }
    }

    #[test]
    fn noindex_skips_unless_owned() {
        let mut p = post("public");
        p.account.noindex = Some(false);
        assert_eq!(OPEN.check(&p), Ok(()));
        p.account.noindex = Some(true);
        assert_eq!(OPEN.check(&p), Err(SkipReason::Noindex));
        assert_eq!(ConsentPolicy { owned: true, ..OPEN }.check(&p), Ok(()));
    }

    #[test]
    fn each_bio_tag_skips_unless_owned() {
        for (tags, name) in [
            (BioTags { nobot: true, ..Default::default() }, "nobot"),
            (BioTags { noindex: true, ..Default::default() }, "noindex"),
            (BioTags { nobridge: true, ..Default::default() }, "nobridge"),
        ] {
            let mut p = post("public");
            p.account.bio_tags = tags;
            let err = OPEN.check(&p).unwrap_err();
            assert_eq!(err, SkipReason::BioTag(name));
            assert_eq!(err.as_str(), format!("bio_{name}"));
            assert!(err.to_string().contains(name));
            assert_eq!(ConsentPolicy { owned: true, ..OPEN }.check(&p), Ok(()));
        }
    }

    #[test]
    fn boost_checks_wrapper_visibility_and_booster() {
        let ctx = NormalizeContext { instance: "b", via: Via::Stream, received_at: Utc::now() };
        // Public wrapper of an unlisted original, booster has #nobot in the bio.
        let json = r##"{"id":"2","uri":"u2/activity","visibility":"public",
            "account":{"id":"9","acct":"booster","note":"<p>#nobot</p>"},
            "reblog":{"id":"1","uri":"u1","visibility":"unlisted","account":{"id":"8","acct":"author@x"}}}"##;
        let p = parse_and_normalize(json, &ctx).unwrap();
        assert_eq!(OPEN.check(&p), Err(SkipReason::BioTag("nobot")));
        let mut p2 = p.clone();
        p2.account.bio_tags = BioTags::default();
        assert_eq!(OPEN.check(&p2), Ok(()), "the original's visibility is not checked");
    }
}
