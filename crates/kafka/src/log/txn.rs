//! A transactional producer that knows whether a transaction may still be open.
//!
//! librdkafka's rules: a commit that times out may be called again; any other
//! failure needs an abort, and an abort that times out must itself be called
//! again before anything else. A future dropped mid-transaction (shutdown) leaves
//! the flag set, so the next `begin` aborts first.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::TopicPartitionList;
use tracing::warn;

use super::fence::is_fence_error;
use super::{blocking, classify_txn, TxnFailure};

pub(crate) struct TxnProducer {
    pub(crate) producer: FutureProducer,
    /// A transaction was begun and neither committed nor aborted yet.
    open: bool,
}

impl TxnProducer {
    pub(crate) fn new(producer: FutureProducer) -> Self {
        TxnProducer { producer, open: false }
    }

    pub(crate) async fn begin(&mut self) -> Result<(), TxnFailure> {
        if self.open {
            self.abort().await?;
        }
        self.open = true;
        self.producer.begin_transaction().map_err(|e| classify_txn(&e))
    }

    /// Commit; on failure the transaction stays marked open (the next `begin` aborts it).
    pub(crate) async fn commit(&mut self) -> Result<(), TxnFailure> {
        // Wait for the records to be acknowledged before committing. rdkafka's
        // commit_transaction flushes first by polling in 100 ms steps while its
        // background thread takes the events, so each commit took 100 ms; here
        // the commit finds nothing in flight and goes straight to EndTxn.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let t0 = std::time::Instant::now();
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tracing::debug!(acks_us = t0.elapsed().as_micros() as u64, "records acknowledged; committing");
        for attempt in 0.. {
            let p = self.producer.clone();
            let r = blocking(move || p.commit_transaction(Duration::from_secs(60))).await.map_err(|e| TxnFailure::Fatal(e.to_string()))?;
            match r {
                Ok(()) => {
                    self.open = false;
                    return Ok(());
                }
                Err(KafkaError::Transaction(rd)) if rd.is_retriable() && !rd.txn_requires_abort() && attempt < 5 => {
                    warn!(error = %rd.string(), "Kafka transaction commit timed out; committing again");
                }
                Err(e) => return Err(classify_txn(&e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// Put a consumer group's `offsets` into the open transaction. The group
    /// coordinator checks `meta` (member id, generation): a rejection because
    /// the member's assignment is gone is [`TxnFailure::Fenced`].
    pub(crate) async fn send_offsets(&self, offsets: TopicPartitionList, meta: Arc<ConsumerGroupMetadata>) -> Result<(), TxnFailure> {
        let p = self.producer.clone();
        blocking(move || p.send_offsets_to_transaction(&offsets, &meta, Duration::from_secs(30)))
            .await
            .map_err(|e| TxnFailure::Fatal(e.to_string()))?
            .map_err(|e| if is_fence_error(&e) { TxnFailure::Fenced(e.to_string()) } else { classify_txn(&e) })
    }

    /// Abort the open transaction, calling again until the broker confirms.
    pub(crate) async fn abort(&mut self) -> Result<(), TxnFailure> {
        for attempt in 1u64.. {
            let p = self.producer.clone();
            let r = blocking(move || p.abort_transaction(Duration::from_secs(10))).await.map_err(|e| TxnFailure::Fatal(e.to_string()))?;
            match r {
                Ok(()) => break,
                Err(KafkaError::Transaction(rd)) if rd.code() == RDKafkaErrorCode::State => break,
                Err(KafkaError::Transaction(rd)) if rd.is_fatal() => return Err(TxnFailure::Fatal(rd.string())),
                Err(e) => {
                    if attempt % 6 == 1 {
                        warn!(error = %e, attempt, "Aborting the Kafka transaction failed; trying again");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.open = false;
        Ok(())
    }
}
