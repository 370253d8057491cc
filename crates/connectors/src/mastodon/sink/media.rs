//! Re-uploading a post's attachments to the target server: download each from
//! its home server, upload it with its alt text, wait (bounded) until the server
//! has processed it. An attachment that still fails after a retry becomes a
//! clearly marked link line instead, so the post goes out either way. Spent
//! budgets (local or the server's 429) and refused credentials are not failures
//! of the attachment: they go back to the caller, which waits.

use std::time::{Duration, Instant};

use fedistream_core::post::Media;
use fedistream_core::ErrorKind;

use super::pace::Window;
use super::Failure;
use crate::mastodon::client::{MastodonClient, MastodonError};

/// Mastodon attaches at most this many files to a status.
pub const MAX_ATTACHMENTS: usize = 4;
const ATTEMPTS: usize = 2;
const POLLS: u32 = 40;
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(2);

/// The line standing in for an attachment that is not re-uploaded.
pub fn link_line(url: &str) -> String {
    format!("[media: {url}]")
}

/// The attachment's address on its home server.
pub fn media_url(m: &Media) -> Option<&str> {
    m.url.as_deref().or(m.preview_url.as_deref()).filter(|u| !u.is_empty())
}

/// Upload what can be uploaded; return the target media ids and the link lines
/// for the rest.
pub(super) async fn reupload(client: &MastodonClient, media: &[Media], budget: &mut Window) -> Result<(Vec<String>, Vec<String>), Failure> {
    let mut ids = Vec::new();
    let mut links = Vec::new();
    for m in media {
        let Some(url) = media_url(m) else { continue };
        if ids.len() >= MAX_ATTACHMENTS {
            links.push(link_line(url));
            continue;
        }
        budget.check(Instant::now()).map_err(|d| Failure::Paced(d, "media upload"))?;
        let mut uploaded = None;
        for attempt in 1..=ATTEMPTS {
            match upload_one(client, url, m).await {
                Ok(id) => {
                    uploaded = Some(id);
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::Auth | ErrorKind::Config) || e.status() == Some(429) => {
                    return Err(Failure::Remote(e));
                }
                Err(e) => tracing::warn!(error = %e, attempt, "Cannot re-upload an attachment"),
            }
        }
        match uploaded {
            Some(id) => {
                budget.take(Instant::now());
                ids.push(id);
            }
            None => links.push(link_line(url)),
        }
    }
    Ok((ids, links))
}

async fn upload_one(client: &MastodonClient, url: &str, m: &Media) -> Result<String, MastodonError> {
    let file = client.download(url).await?;
    let content_type = file.content_type.clone().unwrap_or_else(|| guess_type(&m.kind).to_string());
    let filename = url.rsplit('/').next().filter(|n| !n.is_empty() && n.len() < 100).unwrap_or("media");
    let up = client.upload_media(file.bytes, filename, &content_type, m.description.as_deref()).await?;
    if up.ready {
        return Ok(up.id);
    }
    let mut delay = POLL_FIRST;
    for _ in 0..POLLS {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(POLL_MAX);
        if client.get_media(&up.id).await?.ready {
            return Ok(up.id);
        }
    }
    Err(MastodonError::decode("/api/v1/media/:id", "the attachment was still processing at the deadline"))
}

fn guess_type(kind: &str) -> &'static str {
    match kind {
        "image" => "image/jpeg",
        "gifv" | "video" => "video/mp4",
        "audio" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}
