//! Roles on the Kafka log: `ingest` (sources → log), `deliver` (log → channels),
//! `process` (processors: log → log), `all` (everything). Any number of processes of each role may run on any machines:
//! deliver processes split each channel's partitions through its consumer group;
//! ingest processes split the accounts through the ingest group
//! ([`fedistream_kafka::assign`]), restarting their sources with the accounts
//! they hold whenever the group changes. Their appends are fenced by the
//! assignment they were made under, so a process that lost its slots while
//! paused cannot store posts another process now fetches.
//!
//! When every source is finite (replays), runs end as on the embedded log:
//! `ingest` once the sources of its slots have finished, `all` once they have
//! and every channel's group has committed everything in the log. `deliver`
//! runs until signalled (it cannot know that nobody appends any more), or,
//! with `--until-caught-up`, until every channel's group has no lag.
//!
//! A build without the `kafka` feature has the roles' names (the command line
//! is the same) and refuses a Kafka config at start.

use clap::ValueEnum;

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "kafka")]
pub use kafka::run_kafka;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Sources and channels in this process.
    All,
    /// Only sources: follow accounts and append to the log.
    Ingest,
    /// Only channels: deliver from the log.
    Deliver,
    /// Only processors: read their input topic, write their output topic
    /// (statistics and other derived records). Several processes split the
    /// input partitions; a processor's state moves with its partitions.
    Process,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Deliver => "deliver",
            Role::Process => "process",
        }
    }
}
