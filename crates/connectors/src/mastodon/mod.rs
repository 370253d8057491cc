//! The Mastodon client API: [`client`] (REST), [`ratelimit`], [`sse`] and [`ws`]
//! (the two streaming transports), [`stream`] (one supervised streaming
//! connection with watchdog and reconnects) and [`source`] (the lossless source).

pub mod client;
pub mod ratelimit;
pub mod sink;
pub mod source;
pub mod sse;
pub mod stream;
pub mod ws;
