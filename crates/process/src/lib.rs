//! fedistream-process: pure transformations of posts (no I/O; the clock is passed in).
//!
//! This crate owns reading Mastodon-API Status JSON ([`entity`]), turning its HTML
//! into text ([`html`]), mapping it to the normalised
//! [`fedistream_core::post::Post`] ([`mod@normalize`]), the publication consent rule
//! ([`consent`]), per-channel route filters ([`filter`]) and the per-account
//! activity statistics processor ([`stats`]). Fetching statuses is
//! the connectors' job; running these steps and acting on their results is the
//! runtime's.

pub mod consent;
pub mod entity;
pub mod filter;
pub mod html;
pub mod normalize;
pub mod stats;

pub use consent::{ConsentPolicy, SkipReason};
pub use entity::{parse_account, parse_status, ParseError};
pub use filter::{CompiledFilter, FilterConfig, ReplyPolicy};
pub use html::{bio_consent_tags, html_to_text};
pub use normalize::{normalize, normalize_owned, parse_and_normalize, NormalizeContext};
