//! The channel's topic at open: it must exist, or, with `create_topic`, it is
//! created (with the asked partitions, replication and settings). A topic that
//! already exists is used as it is; when its partition count differs from what
//! `create_topic` asks, the channel says so (Kafka can add partitions to a
//! topic, never remove them, and adding moves keys: an operator's decision).

use std::time::Duration;

use fedistream_core::{ErrorKind, SinkError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use tracing::{info, warn};

use super::config::CreateTopic;
use super::{classify, ChannelContext, ChannelProducer, KafkaChannel};

/// What the brokers say about the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    pub partitions: usize,
    /// Replicas of its first partition.
    pub replication: usize,
}

impl KafkaChannel {
    /// The topic exists (created if missing and `create_topic` is given), within `timeout`.
    pub(super) async fn ensure_topic(&self, producer: &ChannelProducer) -> Result<(), SinkError> {
        if let Some(found) = self.topic_metadata(producer).await? {
            self.compare(found, false);
            return Ok(());
        }
        let Some(ct) = &self.cfg.create_topic else {
            return Err(self.err(
                ErrorKind::Config,
                format_args!(
                    "the topic does not exist on {}; create it, or let the channel create it with create_topic = {{ partitions = 6 }}",
                    self.cfg.brokers
                ),
            ));
        };
        let created = self.create(ct).await?;
        // A new topic takes a moment to show its partitions in the metadata.
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        loop {
            match self.topic_metadata(producer).await {
                Ok(Some(found)) => {
                    self.compare(found, created);
                    return Ok(());
                }
                Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {}
                Ok(None) => {
                    return Err(self.err(
                        ErrorKind::Transient,
                        format_args!("the topic was created but has no partitions in the metadata after {:?}", self.cfg.timeout),
                    ))
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Warn when an existing topic's partition count (or replication) is not
    /// the one `create_topic` asks for.
    fn compare(&self, found: Found, created_here: bool) {
        let Some(ct) = &self.cfg.create_topic else {
            return;
        };
        let topic = self.cfg.topic.as_str();
        if let Some(asked) = ct.partitions.filter(|n| *n as usize != found.partitions) {
            warn!(
                channel = %self.name, topic, partitions = found.partitions, asked,
                "Kafka channel topic has {} partitions, create_topic asks for {asked}: using it as it is (to add partitions: \
                 kafka-topics --alter --partitions; existing keys then move to other partitions)",
                found.partitions
            );
        }
        if let Some(asked) = ct.replication.filter(|n| *n as usize != found.replication && !created_here) {
            warn!(
                channel = %self.name, topic, replication = found.replication, asked,
                "Kafka channel topic has replication {}, create_topic asks for {asked}: using it as it is",
                found.replication
            );
        }
    }

    /// Create the topic. Returns false if another client created it meanwhile.
    async fn create(&self, ct: &CreateTopic) -> Result<bool, SinkError> {
        let admin: AdminClient<ChannelContext> =
            self.producer_config().create_with_context(ChannelContext::default()).map_err(|e| self.client_error(e))?;
        let topic = self.cfg.topic.as_str();
        let mut new = NewTopic::new(topic, ct.partitions.unwrap_or(-1), TopicReplication::Fixed(ct.replication.unwrap_or(-1)));
        for (k, v) in &ct.config {
            new = new.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(self.cfg.timeout)).request_timeout(Some(self.cfg.timeout));
        let result = admin.create_topics([&new], &opts).await;
        // Dropping a client joins its thread: not on the async threads.
        tokio::task::spawn_blocking(move || drop(admin));
        let result = result.map_err(|e| {
            self.err(ErrorKind::Transient, format_args!("cannot create the topic on {} (create_topic): {e}", self.cfg.brokers))
        })?;
        match result.into_iter().next() {
            Some(Ok(_)) => {
                info!(
                    channel = %self.name, topic, partitions = ?ct.partitions, replication = ?ct.replication, config = ?ct.config,
                    "Created the Kafka channel's topic"
                );
                Ok(true)
            }
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
            Some(Err((_, code))) => {
                use RDKafkaErrorCode as C;
                let kind = match code {
                    C::InvalidReplicationFactor | C::InvalidPartitions | C::InvalidReplicaAssignment | C::InvalidRequest => {
                        ErrorKind::Config
                    }
                    c => match classify(c) {
                        ErrorKind::Permanent => ErrorKind::Config,
                        k => k,
                    },
                };
                let hint = match code {
                    C::InvalidReplicationFactor => ": is create_topic.replication more than the cluster's brokers?",
                    C::InvalidConfig => ": check the names and values in create_topic.config",
                    C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => ": the credentials may not create topics",
                    _ => "",
                };
                Err(self.err(kind, format_args!("cannot create the topic on {} (create_topic): {code}{hint}", self.cfg.brokers)))
            }
            None => Err(self.err(ErrorKind::Internal, "creating the topic returned no result")),
        }
    }

    /// The topic's partitions and replication, `None` if it does not exist.
    async fn topic_metadata(&self, producer: &ChannelProducer) -> Result<Option<Found>, SinkError> {
        let (p, topic, timeout) = (producer.clone(), self.cfg.topic.clone(), self.cfg.timeout);
        let md = tokio::task::spawn_blocking(move || {
            p.client().fetch_metadata(Some(&topic), timeout).map(|md| {
                md.topics().iter().find(|t| t.name() == topic).map(|t| {
                    let replication = t.partitions().first().map_or(0, |p| p.replicas().len());
                    (t.error().map(RDKafkaErrorCode::from), Found { partitions: t.partitions().len(), replication })
                })
            })
        })
        .await
        .map_err(|e| self.err(ErrorKind::Internal, format_args!("metadata task failed: {e}")))?;
        let brokers = &self.cfg.brokers;
        match md {
            Ok(Some((None, found))) if found.partitions > 0 => Ok(Some(found)),
            Ok(None) | Ok(Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _))) | Ok(Some((None, _))) => Ok(None),
            Ok(Some((Some(code), _))) => {
                Err(self.err(classify(code), format_args!("the brokers at {brokers} report the topic as unusable: {code}")))
            }
            Err(e) => {
                // A refused handshake is reported to the context, not to the call.
                if let Some((Some(code), reason)) = self.context.take_last_error() {
                    if classify(code) == ErrorKind::Auth {
                        return Err(self.err(ErrorKind::Auth, format_args!("the brokers at {brokers} refused the credentials: {reason}")));
                    }
                }
                let kind = match e.rdkafka_error_code() {
                    Some(c) if classify(c) != ErrorKind::Permanent => classify(c),
                    _ => ErrorKind::Transient,
                };
                Err(self.err(kind, format_args!("cannot fetch the topic's metadata from {brokers} within {:?}: {e}", self.cfg.timeout)))
            }
        }
    }
}
