//! One JetStream message per append: the layout of the batch it carries.
//!
//! Headers:
//! - `Eventsourced-Seq-No`: the seq_no of the first event in the message;
//! - `Eventsourced-Count`: how many events it carries (at least 1);
//! - `Nats-Expected-Last-Subject-Sequence` (read by the server only): the
//!   stream sequence of the entity's last message, `0` for its first one.
//!
//! Payload: with one event, the event's bytes as they are; with several, each
//! event as a 4-byte big-endian length followed by its bytes.

use async_nats::{HeaderMap, HeaderValue};
use bytes::{BufMut, Bytes, BytesMut};
use eventsourced::SeqNo;

/// The header holding the first event's seq_no.
pub(crate) const SEQ_NO_HEADER: &str = "Eventsourced-Seq-No";
/// The header holding the number of events.
pub(crate) const COUNT_HEADER: &str = "Eventsourced-Count";

/// The most events one append (one message) can carry: the event's index in
/// its message is the low 16 bits of its position.
pub(crate) const MAX_EVENTS_PER_APPEND: usize = 1 << 16;

/// Headers and payload of a message carrying `events`, the first with `first`.
pub(crate) fn encode(
    first: SeqNo,
    events: &[Bytes],
    expected_last_subject_seq: u64,
) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        HeaderValue::from(expected_last_subject_seq),
    );
    headers.insert(SEQ_NO_HEADER, HeaderValue::from(first.get()));
    headers.insert(COUNT_HEADER, HeaderValue::from(events.len()));
    let payload = match events {
        [one] => one.clone(),
        many => {
            let size = many.iter().map(|e| 4 + e.len()).sum();
            let mut buf = BytesMut::with_capacity(size);
            for event in many {
                // Events larger than 4 GiB cannot reach here: the server's
                // max_payload is far smaller and checked by the caller.
                buf.put_u32(u32::try_from(event.len()).unwrap_or(u32::MAX));
                buf.put_slice(event);
            }
            buf.freeze()
        }
    };
    (headers, payload)
}

/// The batch carried by one message.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The seq_no of the first event.
    pub(crate) first: SeqNo,
    /// The events, in order.
    pub(crate) events: Vec<Bytes>,
}

impl Batch {
    /// The seq_no of the last event.
    pub(crate) fn last(&self) -> SeqNo {
        self.first.add(len_u64(self.events.len()).saturating_sub(1))
    }
}

/// `n` as a u64 (usize is at most 64 bits on every supported platform).
pub(crate) fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Reads the first seq_no and the count from a message's headers.
pub(crate) fn header_numbers(headers: Option<&HeaderMap>) -> Result<(SeqNo, usize), String> {
    let headers = headers.ok_or("the message has no headers (not written by eventsourced)")?;
    let first = header_u64(headers, SEQ_NO_HEADER)?;
    let count = header_u64(headers, COUNT_HEADER)?;
    if first == 0 {
        return Err(format!("header {SEQ_NO_HEADER} is 0; seq_nos start at 1"));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|c| (1..=MAX_EVENTS_PER_APPEND).contains(c))
        .ok_or_else(|| {
            format!("header {COUNT_HEADER} is {count}; expected 1..={MAX_EVENTS_PER_APPEND}")
        })?;
    // Every seq_no of the message must be a u64: the arithmetic on batches
    // relies on it.
    if first.checked_add(len_u64(count) - 1).is_none() {
        return Err(format!(
            "headers {SEQ_NO_HEADER} {first} and {COUNT_HEADER} {count} give seq_nos beyond the largest one"
        ));
    }
    Ok((SeqNo::new(first), count))
}

/// The seq_no of the last event in a message, from its headers alone.
pub(crate) fn last_seq_no(headers: Option<&HeaderMap>) -> Result<SeqNo, String> {
    let (first, count) = header_numbers(headers)?;
    Ok(first.add(len_u64(count) - 1))
}

/// Decodes a message written by [`encode`].
pub(crate) fn decode(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<Batch, String> {
    let (first, count) = header_numbers(headers)?;
    let events = if count == 1 {
        vec![payload.clone()]
    } else {
        let mut events = Vec::with_capacity(count);
        let mut at = 0usize;
        while at < payload.len() {
            let len_bytes: [u8; 4] = payload
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("truncated length at byte {at} of the payload"))?;
            let len = usize::try_from(u32::from_be_bytes(len_bytes))
                .map_err(|_| "event length does not fit in memory".to_owned())?;
            let start = at + 4;
            let end = start
                .checked_add(len)
                .filter(|end| *end <= payload.len())
                .ok_or_else(|| {
                    format!(
                        "event {} claims {len} bytes but the payload ends at byte {}",
                        events.len(),
                        payload.len()
                    )
                })?;
            events.push(payload.slice(start..end));
            at = end;
        }
        if events.len() != count {
            return Err(format!(
                "header {COUNT_HEADER} says {count} events but the payload holds {}",
                events.len()
            ));
        }
        events
    };
    Ok(Batch { first, events })
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<u64, String> {
    let value = headers
        .get(name)
        .ok_or_else(|| format!("header {name} is missing"))?;
    value
        .as_str()
        .parse()
        .map_err(|e| format!("header {name} is {:?}, not a number: {e}", value.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_round_trips_unframed() {
        let (headers, payload) = encode(SeqNo::new(7), &[Bytes::from_static(b"x")], 42);
        assert_eq!(payload, Bytes::from_static(b"x"));
        assert_eq!(
            headers
                .get(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                .map(|v| v.as_str().to_owned()),
            Some("42".to_owned())
        );
        let batch = decode(Some(&headers), &payload).expect("decodes");
        assert_eq!(batch.first, SeqNo::new(7));
        assert_eq!(batch.last(), SeqNo::new(7));
        assert_eq!(batch.events, vec![Bytes::from_static(b"x")]);
    }

    #[test]
    fn several_events_round_trip_including_empty_ones() {
        let events = vec![
            Bytes::new(),
            Bytes::from_static(b"ab"),
            Bytes::from((0..=255u8).collect::<Vec<_>>()),
        ];
        let (headers, payload) = encode(SeqNo::new(1), &events, 0);
        let batch = decode(Some(&headers), &payload).expect("decodes");
        assert_eq!(batch.events, events);
        assert_eq!(batch.last(), SeqNo::new(3));
        assert_eq!(last_seq_no(Some(&headers)), Ok(SeqNo::new(3)));
    }

    #[test]
    fn corrupt_messages_are_reported() {
        let events = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        let (headers, payload) = encode(SeqNo::new(1), &events, 0);
        assert!(decode(Some(&headers), &payload.slice(..payload.len() - 1)).is_err());
        assert!(decode(Some(&headers), &payload.slice(..3)).is_err());
        assert!(decode(None, &payload).is_err());
        let mut wrong_count = headers.clone();
        wrong_count.insert(COUNT_HEADER, HeaderValue::from(3u64));
        assert!(decode(Some(&wrong_count), &payload).is_err());
        let mut zero = headers;
        zero.insert(SEQ_NO_HEADER, "0");
        assert!(decode(Some(&zero), &payload).is_err());
    }
}
