//! Conversion of events and state to and from [`Bytes`].
//!
//! The event log and snapshot store only see bytes; an entity is spawned with a
//! [`Binarize`] that converts its events and its state. `SerdeJson` and
//! `Prost` are provided behind the cargo features of the same names.
//!
//! ```
//! use eventsourced::binarize::{Binarize, SerdeJson};
//!
//! // One `SerdeJson` converts the events and the state of an entity.
//! let event = SerdeJson.encode(&3u64).unwrap();
//! let state = SerdeJson.encode(&(7u64, true)).unwrap();
//! assert_eq!(&event[..], b"3");
//! assert_eq!(&state[..], b"[7,true]");
//! let back: (u64, bool) = SerdeJson.decode(state).unwrap();
//! assert_eq!(back, (7, true));
//! ```

use crate::event_log::BoxError;
use bytes::Bytes;

/// Converts values of `T` to and from bytes.
///
/// Spawning an entity `E` takes a `B: Binarize<E::Event> + Binarize<E>`: one
/// value that handles both its events and its state (for snapshots).
///
/// ```
/// use eventsourced::{Binarize, SerdeJson};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Event { Increased(u64) }
///
/// let bytes = SerdeJson.encode(&Event::Increased(3)).unwrap();
/// let back: Event = SerdeJson.decode(bytes).unwrap();
/// assert_eq!(back, Event::Increased(3));
/// ```
pub trait Binarize<T>: Clone + Send + Sync + 'static {
    /// Encodes `value`.
    fn encode(&self, value: &T) -> Result<Bytes, BinarizeError>;

    /// Decodes bytes produced by [`encode`](Binarize::encode).
    fn decode(&self, bytes: Bytes) -> Result<T, BinarizeError>;
}

/// Encoding or decoding failed.
///
/// ```
/// use eventsourced::{Binarize, BinarizeError, SerdeJson};
///
/// let error: BinarizeError = Binarize::<u64>::decode(&SerdeJson, "-1".into()).unwrap_err();
/// assert_eq!((error.direction, error.type_name, error.format), ("decode", "u64", "serde_json"));
/// assert!(error.to_string().starts_with("cannot decode u64 with serde_json: "));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("cannot {direction} {type_name} with {format}: {source}")]
pub struct BinarizeError {
    /// "encode" or "decode".
    pub direction: &'static str,
    /// The Rust type that was converted.
    pub type_name: &'static str,
    /// The format, e.g. "serde_json".
    pub format: &'static str,
    /// The underlying error.
    #[source]
    pub source: BoxError,
}

/// [`Binarize`] with `serde_json`, for any `Serialize + DeserializeOwned` type.
///
/// ```
/// use eventsourced::{Binarize, SerdeJson};
/// let bytes = SerdeJson.encode(&vec![1, 2]).unwrap();
/// assert_eq!(&bytes[..], b"[1,2]");
/// let back: Vec<i32> = SerdeJson.decode(bytes).unwrap();
/// assert_eq!(back, vec![1, 2]);
/// let err = Binarize::<Vec<i32>>::decode(&SerdeJson, "{".into()).unwrap_err();
/// assert!(err.to_string().starts_with("cannot decode alloc::vec::Vec<i32> with serde_json"));
/// ```
#[cfg(feature = "serde_json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SerdeJson;

#[cfg(feature = "serde_json")]
impl<T> Binarize<T> for SerdeJson
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    fn encode(&self, value: &T) -> Result<Bytes, BinarizeError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|source| BinarizeError {
                direction: "encode",
                type_name: std::any::type_name::<T>(),
                format: "serde_json",
                source: source.into(),
            })
    }

    fn decode(&self, bytes: Bytes) -> Result<T, BinarizeError> {
        serde_json::from_slice(&bytes).map_err(|source| BinarizeError {
            direction: "decode",
            type_name: std::any::type_name::<T>(),
            format: "serde_json",
            source: source.into(),
        })
    }
}

/// [`Binarize`] with `prost`, for any `prost::Message + Default` type; messages
/// are derived in Rust (`#[derive(prost::Message)]`), no `protoc` needed.
///
/// ```
/// use eventsourced::{Binarize, Prost};
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Increased {
///     #[prost(uint64, tag = "1")]
///     by: u64,
/// }
///
/// let bytes = Prost.encode(&Increased { by: 5 }).unwrap();
/// let back: Increased = Prost.decode(bytes).unwrap();
/// assert_eq!(back.by, 5);
/// ```
#[cfg(feature = "prost")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Prost;

#[cfg(feature = "prost")]
impl<T> Binarize<T> for Prost
where
    T: prost::Message + Default,
{
    fn encode(&self, value: &T) -> Result<Bytes, BinarizeError> {
        Ok(value.encode_to_vec().into())
    }

    fn decode(&self, bytes: Bytes) -> Result<T, BinarizeError> {
        T::decode(bytes).map_err(|source| BinarizeError {
            direction: "decode",
            type_name: std::any::type_name::<T>(),
            format: "prost",
            source: source.into(),
        })
    }
}
