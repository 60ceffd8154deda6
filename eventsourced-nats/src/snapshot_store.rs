//! [`NatsSnapshotStore`]: snapshots in a JetStream key-value bucket.

use crate::{NatsConfig, NatsError, connection, subject};
use async_nats::jetstream::{
    self,
    context::CreateKeyValueErrorKind,
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
};
use bytes::{BufMut, Bytes, BytesMut};
use eventsourced::{EventLogError, SeqNo, SnapshotStore, SnapshotStoreError};
use std::{fmt, sync::Arc};
use tokio::sync::OnceCell;
use tracing::warn;

const BACKEND: &str = "nats";

/// The first byte of every stored value: the layout version.
const FORMAT: u8 = 1;

/// How often a save retries when other saves of the same entity interleave.
const SAVE_ATTEMPTS: usize = 8;

/// A [`SnapshotStore`] on a NATS JetStream key-value bucket.
///
/// The key of entity `type_name`/`id` is `<type-token>.<id-token>`, the same
/// base64url tokens as the event subjects, so any id round-trips. The value is
/// one format byte (1), the seq_no as 8 bytes big-endian, then the state. A
/// save never replaces a snapshot with a higher seq_no: it compares and swaps
/// on the key's revision.
///
/// ```no_run
/// use eventsourced::{SeqNo, SnapshotStore};
/// use eventsourced_nats::{NatsConfig, NatsSnapshotStore};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = NatsSnapshotStore::new(NatsConfig::from_url("nats://127.0.0.1:4222")).await?;
/// store.setup().await?;
/// store.save("counter", "a", SeqNo::new(10), "state".into()).await?;
/// assert_eq!(store.load("counter", "a").await?, Some((SeqNo::new(10), "state".into())));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NatsSnapshotStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    bucket: OnceCell<kv::Store>,
}

impl fmt::Debug for NatsSnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSnapshotStore")
            .field("servers", &self.inner.config.servers_for_display())
            .field("bucket", &self.inner.config.bucket)
            .finish_non_exhaustive()
    }
}

impl NatsSnapshotStore {
    /// Connects as `config` says. Does not create the bucket: call
    /// [`setup`](NatsSnapshotStore::setup) once (it is idempotent).
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsSnapshotStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = NatsConfig::from_url("nats://127.0.0.1:4222");
    /// config.bucket = "orders-snapshots".to_owned();
    /// let snapshots = NatsSnapshotStore::new(config).await?;
    /// snapshots.setup().await?;
    /// assert_eq!(snapshots.config().bucket, "orders-snapshots");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new(config: NatsConfig) -> Result<Self, NatsError> {
        let (client, _) = connection::connect(&config).await?;
        Self::with_client(client, config).await
    }

    /// Uses an existing client, e.g. [`NatsEventLog::client`](crate::NatsEventLog::client);
    /// the connection fields of `config` are ignored.
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = NatsEventLog::new(NatsConfig::default()).await?;
    /// let snapshots = NatsSnapshotStore::with_client(log.client().clone(), NatsConfig::default()).await?;
    /// snapshots.setup().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_client(
        client: async_nats::Client,
        config: NatsConfig,
    ) -> Result<Self, NatsError> {
        config.validate()?;
        connection::check_server(&client, &config)?;
        let jetstream = connection::jetstream(client.clone(), &config);
        Ok(NatsSnapshotStore {
            inner: Arc::new(Inner {
                config,
                client,
                jetstream,
                bucket: OnceCell::new(),
            }),
        })
    }

    /// Creates the bucket, or updates its settings if it exists. It keeps one
    /// value per key (no history).
    ///
    /// ```no_run
    /// use eventsourced::{SeqNo, SnapshotStore};
    /// use eventsourced_nats::{NatsConfig, NatsSnapshotStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let snapshots = NatsSnapshotStore::new(NatsConfig::default()).await?;
    /// snapshots.setup().await?;
    /// snapshots.setup().await?; // idempotent
    /// snapshots.save("counter", "a", SeqNo::new(3), "3".into()).await?;
    /// assert_eq!(snapshots.load("counter", "a").await?, Some((SeqNo::new(3), "3".into())));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn setup(&self) -> Result<(), NatsError> {
        let config = &self.inner.config;
        let kv_config = kv::Config {
            bucket: config.bucket.clone(),
            description: "eventsourced snapshots".to_owned(),
            history: 1,
            max_bytes: config
                .max_bytes
                .and_then(|b| i64::try_from(b).ok())
                .unwrap_or(-1),
            storage: config.storage.to_nats(),
            num_replicas: config.replicas,
            ..Default::default()
        };
        let store = self
            .inner
            .jetstream
            .create_or_update_key_value(kv_config)
            .await
            .map_err(|e| {
                let text = e.to_string();
                if e.kind() == CreateKeyValueErrorKind::JetStream
                    && (text.contains("unavailable") || text.contains("not enabled"))
                {
                    NatsError::JetStreamUnavailable {
                        servers: config.servers_for_display(),
                    }
                } else {
                    NatsError::Setup {
                        what: format!("key-value bucket {:?}", config.bucket),
                        source: Box::new(e),
                    }
                }
            })?;
        // A handle bound before setup stays valid; keep whichever came first.
        let _ = self.inner.bucket.set(store);
        Ok(())
    }

    /// The config this store was created with.
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsSnapshotStore, Storage};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = NatsConfig::default();
    /// config.storage = Storage::Memory;
    /// let snapshots = NatsSnapshotStore::new(config).await?;
    /// assert_eq!(snapshots.config().storage, Storage::Memory);
    /// # Ok(())
    /// # }
    /// ```
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// The underlying client.
    ///
    /// ```no_run
    /// use eventsourced_nats::{NatsConfig, NatsSnapshotStore};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let snapshots = NatsSnapshotStore::new(NatsConfig::default()).await?;
    /// let client = snapshots.client().clone(); // shares the connection
    /// client.publish("app.hello", "hi".into()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    async fn bucket(&self, operation: &'static str) -> Result<&kv::Store, SnapshotStoreError> {
        self.inner
            .bucket
            .get_or_try_init(|| async {
                self.inner
                    .jetstream
                    .get_key_value(self.inner.config.bucket.clone())
                    .await
                    .map_err(|e| {
                        SnapshotStoreError::backend(
                            BACKEND,
                            operation,
                            format!(
                                "cannot open key-value bucket {:?}: {e}; create it with NatsSnapshotStore::setup",
                                self.inner.config.bucket
                            ),
                        )
                    })
            })
            .await
    }

    fn corrupt(&self, key: &str, reason: String) -> SnapshotStoreError {
        SnapshotStoreError::Corrupt {
            backend: BACKEND,
            location: format!("bucket {:?}, key {key}", self.inner.config.bucket),
            reason,
        }
    }
}

fn key(type_name: &str, id: &str) -> Result<String, SnapshotStoreError> {
    subject::validate(type_name, id).map_err(|e| match e {
        EventLogError::InvalidId { id, reason } => SnapshotStoreError::InvalidId { id, reason },
        other => SnapshotStoreError::InvalidId {
            id: id.to_owned(),
            reason: other.to_string(),
        },
    })?;
    Ok(format!(
        "{}.{}",
        subject::encode_token(type_name),
        subject::encode_token(id)
    ))
}

fn encode(seq_no: SeqNo, state: &Bytes) -> Bytes {
    let mut value = BytesMut::with_capacity(9 + state.len());
    value.put_u8(FORMAT);
    value.put_u64(seq_no.get());
    value.put_slice(state);
    value.freeze()
}

fn decode(value: &Bytes) -> Result<(SeqNo, Bytes), String> {
    match value.first() {
        Some(&FORMAT) => {}
        Some(other) => return Err(format!("unknown format byte {other}; expected {FORMAT}")),
        None => return Err("the value is empty".to_owned()),
    }
    let seq_no: [u8; 8] = value
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("the value is {} bytes long, shorter than 9", value.len()))?;
    Ok((SeqNo::new(u64::from_be_bytes(seq_no)), value.slice(9..)))
}

impl SnapshotStore for NatsSnapshotStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        let key = key(type_name, id)?;
        let bucket = self.bucket("save").await?;
        let value = encode(seq_no, &state);
        for _ in 0..SAVE_ATTEMPTS {
            let current = bucket.entry(key.as_str()).await.map_err(|e| {
                SnapshotStoreError::backend(BACKEND, "save", format!("reading key {key}: {e}"))
            })?;
            let result: Result<(), String> = match current {
                None => match bucket.create(&key, value.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(e) => Err(e.to_string()),
                },
                Some(entry) => {
                    if entry.operation == Operation::Put {
                        match decode(&entry.value) {
                            Ok((stored, _)) if stored > seq_no => return Ok(()),
                            Ok(_) => {}
                            Err(reason) => warn!(
                                key,
                                reason, "replacing an unreadable snapshot with a new one"
                            ),
                        }
                    }
                    match bucket.update(&key, value.clone(), entry.revision).await {
                        Ok(_) => return Ok(()),
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            if let Err(e) = result {
                return Err(SnapshotStoreError::backend(
                    BACKEND,
                    "save",
                    format!("writing key {key}: {e}"),
                ));
            }
        }
        Err(SnapshotStoreError::backend(
            BACKEND,
            "save",
            format!("key {key} kept changing during {SAVE_ATTEMPTS} attempts (concurrent saves)"),
        ))
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        let key = key(type_name, id)?;
        let bucket = self.bucket("load").await?;
        let entry = bucket.entry(key.as_str()).await.map_err(|e| {
            SnapshotStoreError::backend(BACKEND, "load", format!("reading key {key}: {e}"))
        })?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => decode(&entry.value)
                .map(Some)
                .map_err(|reason| self.corrupt(&key, reason)),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_corruption_is_detected() {
        let value = encode(SeqNo::new(300), &Bytes::from_static(b"state"));
        assert_eq!(
            decode(&value),
            Ok((SeqNo::new(300), Bytes::from_static(b"state")))
        );
        assert!(decode(&Bytes::new()).is_err());
        assert!(decode(&value.slice(..5)).is_err());
        assert!(decode(&Bytes::from_static(b"\x02aaaaaaaa")).is_err());
    }

    #[test]
    fn keys_are_valid_kv_keys() {
        for id in eventsourced::testkit::ODD_IDS {
            let key = key("counter", id).expect("valid");
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{key}"
            );
        }
        assert!(matches!(
            key("counter", ""),
            Err(SnapshotStoreError::InvalidId { .. })
        ));
    }
}
