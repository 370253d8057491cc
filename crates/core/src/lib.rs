//! fedistream-core: the shared vocabulary of fedistream.
//!
//! * [`post`] and [`event`]: the normalised post and the events that carry it.
//! * [`log`]: the Log (bus) contract with its topics; [`sqlite`] is the embedded backend.
//! * [`component`]: the Source, Processor and Sink contracts and their contexts.
//! * [`runtime`]: drives sources, the ingestor, processors and channels with
//!   back-pressure, supervision, retries, dead letters and graceful shutdown.
//! * [`error`]: error classification; [`backoff`]: capped jittered backoff.

pub mod backoff;
pub mod component;
pub mod error;
pub mod event;
pub mod log;
pub mod post;
pub mod runtime;
pub mod secret;
pub mod sqlite;
pub mod units;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use component::{
    Acker, DeadLetter, Emitter, Processor, ProcessorContext, ProcessorOutput, Progress, Sink, SinkContext, Source, SourceBatch,
    SourceContext, Status, Written,
};
pub use error::{ComponentError, ErrorKind, LogError, ProcessorError, SinkError, SourceError};
pub use event::{EncodedEvent, Event, EventKind, LogRecord, Position};
pub use log::{AppendBatch, Commit, Consumer, Log, OutputRecord, StatePut};
pub use post::Post;
