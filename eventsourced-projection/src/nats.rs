//! Lag of projections over the NATS JetStream log (`eventsourced-nats`).
//!
//! ```no_run
//! # async fn f(log: eventsourced_nats::NatsEventLog) {
//! use eventsourced_projection::{LagSource, nats::NatsLag};
//!
//! // `log`: a NatsEventLog connected to a NATS server.
//! let lag = NatsLag::for_log(&log);
//! let behind = lag.events_after("counter", None).await.unwrap();
//! println!("{behind} counter events to project");
//! # }
//! ```

use crate::LagSource;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull::OrderedConfig},
    stream::LastRawMessageErrorKind,
};
use eventsourced::{Position, event_log::BoxError};
use eventsourced_nats::NatsEventLog;
use futures::{FutureExt, StreamExt, future::BoxFuture};
use std::fmt;

/// Bits of a position holding the event's index in its message
/// (`position = stream_sequence × 65 536 + index`).
const INDEX_BITS: u32 = 16;

/// The header of eventsourced-nats holding the number of events in a message.
const COUNT_HEADER: &str = "Eventsourced-Count";

/// Lag for a [`NatsEventLog`]: the exact number of events of a type after an
/// offset, counted from message **headers** only.
///
/// Each append of eventsourced-nats is one message on
/// `<subject-prefix>.<type-token>.<id-token>` whose `Eventsourced-Count`
/// header says how many events it carries, and an event's position is
/// `stream_sequence × 65 536 + index in its message`. A lag query is:
///
/// 1. one "last message by subject" request for the type's filter
///    `<subject-prefix>.<type-token>.*` (a stream request, answered by the
///    stream leader from its subject index): the head of the type, i.e. the
///    stream sequence where counting stops, taken *before* reading, so a
///    query always ends (later appends have higher stream sequences and are
///    not counted) and "no more stored events" needs no waiting or guessing.
///    No message: lag 0. If the head is the offset's own message (a
///    projection that has caught up) the answer comes from its headers,
///    `count − 1 − index`, and nothing else is asked;
/// 2. otherwise **one** ordered, headers-only consumer on that filter,
///    starting at the offset's stream sequence (from the start without an
///    offset), read up to the head: the offset's message adds its events
///    after the offset's index, every later message its `Eventsourced-Count`.
///
/// Why this and not something else: NATS has no count of events (only of
/// messages, which carry 1 to 65 536 events each), so an exact answer must
/// look at every message after the offset; headers-only delivery is the
/// cheapest way to look (no payloads cross the wire), and the server filters
/// the type's subjects. Stream info with a subject filter counts messages,
/// not events; reading [`events_by_type`](eventsourced::EventLog::events_by_type)
/// like `MemoryLag` would transfer and decode every payload. The common case,
/// a caught-up projection, costs a single request.
///
/// Uses the log's client, stream name, subject prefix and request timeout
/// (each delivered message must arrive within twice the timeout, else the
/// query fails).
///
/// ```no_run
/// # async fn f(log: eventsourced_nats::NatsEventLog) {
/// use eventsourced_projection::nats::NatsLag;
/// let lag = NatsLag::for_log(&log);
/// # }
/// ```
#[derive(Clone)]
pub struct NatsLag {
    log: NatsEventLog,
}

impl fmt::Debug for NatsLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsLag").field("log", &self.log).finish()
    }
}

impl NatsLag {
    /// Lag of projections over `log`, on its connection.
    ///
    /// ```no_run
    /// # async fn f(log: eventsourced_nats::NatsEventLog) {
    /// use eventsourced_projection::{LagSource, nats::NatsLag};
    ///
    /// // `log`: a NatsEventLog connected to a NATS server.
    /// let lag = NatsLag::for_log(&log);
    /// let behind = lag.events_after("counter", None).await.unwrap();
    /// println!("{behind} counter events to project");
    /// # }
    /// ```
    pub fn for_log(log: &NatsEventLog) -> Self {
        NatsLag { log: log.clone() }
    }

    async fn count(&self, type_name: &str, offset: Option<Position>) -> Result<u64, BoxError> {
        let filter = self.log.type_subjects(type_name)?;
        let config = self.log.config();
        let jetstream = jetstream::context::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(self.log.client().clone());
        // No request: only checks the name.
        let stream = jetstream.get_stream_no_info(&config.stream).await?;

        let head = match stream.get_last_raw_message_by_subject(&filter).await {
            Ok(message) => message,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => return Ok(0),
            Err(e) => {
                return Err(format!(
                    "cannot read the last message of {filter} from stream {:?}: {e}",
                    config.stream
                )
                .into());
            }
        };
        let head_seq = head.sequence;
        // The offset as (stream sequence, index); `None`: every event counts.
        let at = offset.map(|p| (p.get() >> INDEX_BITS, p.get() & ((1 << INDEX_BITS) - 1)));
        let after = |seq: u64, count: u64| match at {
            Some((o_seq, _)) if seq < o_seq => 0,
            Some((o_seq, o_index)) if seq == o_seq => count.saturating_sub(o_index + 1),
            _ => count,
        };
        match at {
            Some((o_seq, _)) if head_seq < o_seq => return Ok(0),
            Some((o_seq, _)) if head_seq == o_seq => {
                return Ok(after(
                    head_seq,
                    event_count(Some(&head.headers), &filter, head_seq)?,
                ));
            }
            _ => {}
        }

        let start = at.map_or(0, |(o_seq, _)| o_seq);
        let inbox = self.log.client().new_inbox();
        let name = format!("es-lag-{}", inbox.rsplit('.').next().unwrap_or(&inbox));
        let consumer = OrderedConfig {
            name: Some(name.clone()),
            filter_subject: filter.clone(),
            headers_only: true,
            deliver_policy: if start == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                }
            },
            ..Default::default()
        };
        let timeout = config.request_timeout;
        let fail = |what: String| -> BoxError {
            format!(
                "cannot count the messages of {filter} in stream {:?}: {what}",
                config.stream
            )
            .into()
        };
        let consumer = tokio::time::timeout(timeout, stream.create_consumer(consumer))
            .await
            .map_err(|_| fail(format!("no reply within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let mut messages = tokio::time::timeout(timeout, consumer.messages())
            .await
            .map_err(|_| fail(format!("no reply within {timeout:?}")))?
            .map_err(|e| fail(e.to_string()))?;

        let wait = timeout.saturating_mul(2);
        let mut n = 0u64;
        let result = loop {
            let message = match tokio::time::timeout(wait, messages.next()).await {
                Err(_) => break Err(fail(format!("no message within {wait:?}"))),
                Ok(None) => break Err(fail("the consumer ended early".to_owned())),
                Ok(Some(Err(e))) => break Err(fail(e.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => break Err(fail(format!("a message without JetStream metadata: {e}"))),
            };
            if seq > head_seq {
                // The head message vanished (a stream that allows deletes):
                // everything up to the head is counted.
                break Ok(n);
            }
            match event_count(message.headers.as_ref(), &filter, seq) {
                Ok(count) => n += after(seq, count),
                Err(e) => break Err(e),
            }
            if seq == head_seq {
                break Ok(n);
            }
        };
        drop(messages);
        // Best effort: the server removes it anyway 30 s after the read stops.
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        result
    }
}

/// The `Eventsourced-Count` header of a message (1 to 65 536).
fn event_count(
    headers: Option<&async_nats::HeaderMap>,
    filter: &str,
    seq: u64,
) -> Result<u64, BoxError> {
    let value = headers
        .and_then(|h| h.get(COUNT_HEADER))
        .ok_or_else(|| {
            format!("message {seq} of {filter} has no {COUNT_HEADER} header (not written by eventsourced-nats)")
        })?;
    value
        .as_str()
        .parse::<u64>()
        .ok()
        .filter(|c| (1..=1 << INDEX_BITS).contains(c))
        .ok_or_else(|| {
            format!(
                "message {seq} of {filter}: header {COUNT_HEADER} is {:?}, not 1 to 65536",
                value.as_str()
            )
            .into()
        })
}

impl LagSource for NatsLag {
    fn events_after(
        &self,
        type_name: &str,
        offset: Option<Position>,
    ) -> BoxFuture<'_, Result<u64, BoxError>> {
        let type_name = type_name.to_owned();
        async move { self.count(&type_name, offset).await }.boxed()
    }
}
