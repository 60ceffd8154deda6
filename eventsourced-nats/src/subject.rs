//! The mapping of entity type names and ids to NATS subjects.
//!
//! An entity's events live on the subject `<prefix>.<type-token>.<id-token>`,
//! where each token is the base64url encoding (RFC 4648 §5, URL-safe alphabet
//! `A-Z a-z 0-9 - _`, no padding) of the UTF-8 bytes of the name. These
//! characters are all valid in a subject token and in a key-value key, none of
//! them is `.`, `*`, `>` or whitespace, and the encoding is reversible, so any
//! id round-trips. An entity type's events are all on `<prefix>.<type-token>.*`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use eventsourced::EventLogError;

/// The longest entity id, in UTF-8 bytes: keeps subjects well inside the
/// server's default control line limit (4 KiB), together with
/// [`MAX_TYPE_NAME_BYTES`] and [`MAX_PREFIX_BYTES`].
pub(crate) const MAX_ID_BYTES: usize = 1024;

/// The longest entity type name, in UTF-8 bytes.
pub(crate) const MAX_TYPE_NAME_BYTES: usize = 256;

/// The longest subject prefix, in bytes.
///
/// The id and type limits only hold subjects inside the server's 4 KiB
/// control line if the prefix is short too: the longest subject is
/// `256 + 1 + 342 + 1 + 1366 = 1966` bytes (prefix, base64url of a 256-byte
/// type and of a 1024-byte id), and a direct get sends it after
/// `$JS.API.DIRECT.GET.<stream up to 200 bytes>.` with a reply inbox, still
/// about 1.8 KiB short of the limit. With no cap, a long prefix made appends of
/// valid ids fail only at the server, as a missing acknowledgement.
pub(crate) const MAX_PREFIX_BYTES: usize = 256;

/// Encodes a name as one subject token.
pub(crate) fn encode_token(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name.as_bytes())
}

/// Decodes a subject token written by [`encode_token`].
pub(crate) fn decode_token(token: &str) -> Result<String, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| format!("subject token {token:?} is not base64url: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("subject token {token:?} is not UTF-8: {e}"))
}

/// Checks a type name against the shared rules and the NATS limits.
pub(crate) fn validate_type(type_name: &str) -> Result<(), EventLogError> {
    let refuse = |reason: String| EventLogError::InvalidId {
        id: String::new(),
        reason,
    };
    if type_name.is_empty() {
        return Err(refuse("the entity type name is empty".to_owned()));
    }
    if type_name.len() > MAX_TYPE_NAME_BYTES {
        return Err(refuse(format!(
            "the entity type name is {} bytes long; the NATS backend allows at most {MAX_TYPE_NAME_BYTES}",
            type_name.len()
        )));
    }
    Ok(())
}

/// Checks a type name and id against the shared rules and the NATS limits.
pub(crate) fn validate(type_name: &str, id: &str) -> Result<(), EventLogError> {
    eventsourced::event_log::validate_id(type_name, id)?;
    validate_type(type_name).map_err(|e| match e {
        EventLogError::InvalidId { reason, .. } => EventLogError::InvalidId {
            id: id.to_owned(),
            reason,
        },
        other => other,
    })?;
    if id.len() > MAX_ID_BYTES {
        return Err(EventLogError::InvalidId {
            id: id.to_owned(),
            reason: format!(
                "the id is {} bytes long; the NATS backend allows at most {MAX_ID_BYTES}",
                id.len()
            ),
        });
    }
    Ok(())
}

/// Builds and parses the subjects under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix` (validated by the config).
    pub(crate) fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.to_owned(),
        }
    }

    /// The stream's subject filter: `<prefix>.>`.
    pub(crate) fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The subject of one entity.
    pub(crate) fn entity(&self, type_name: &str, id: &str) -> String {
        format!(
            "{}.{}.{}",
            self.prefix,
            encode_token(type_name),
            encode_token(id)
        )
    }

    /// The filter matching every entity of a type.
    pub(crate) fn entity_type(&self, type_name: &str) -> String {
        format!("{}.{}.*", self.prefix, encode_token(type_name))
    }

    /// The entity id of a subject built by [`Subjects::entity`].
    pub(crate) fn id_of(&self, subject: &str) -> Result<String, String> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or_else(|| format!("subject {subject:?} is not under {}", self.prefix))?;
        let (_type_token, id_token) = rest
            .split_once('.')
            .ok_or_else(|| format!("subject {subject:?} has no id token"))?;
        if id_token.contains('.') {
            return Err(format!("subject {subject:?} has too many tokens"));
        }
        decode_token(id_token)
    }
}

/// Whether `prefix` is a valid subject prefix: dot-separated tokens of
/// `A-Z a-z 0-9 - _` (so never `$JS`, `$KV` or another `$` subject), at most
/// [`MAX_PREFIX_BYTES`] long, the first token not `_INBOX`.
///
/// `_INBOX.>` is where the client receives its request replies and publish
/// acks; a stream on `_INBOX.>` would store every one of them next to the
/// events, and with `deny_purge` they could never be removed.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_PREFIX_BYTES} keep the longest event subject inside the server's 4 KiB control line",
            prefix.len()
        ));
    }
    if prefix.split('.').next() == Some("_INBOX") {
        return Err(format!(
            "{prefix:?} begins with the token \"_INBOX\", where the client receives its request replies and publish acks (the stream would store them all); choose another prefix"
        ));
    }
    for token in prefix.split('.') {
        if token.is_empty() {
            return Err(format!(
                "{prefix:?} has an empty token (leading, trailing or double '.')"
            ));
        }
        if let Some(bad) = token
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{prefix:?} contains {bad:?}; use only A-Z a-z 0-9 - _ and '.' between tokens"
            ));
        }
    }
    Ok(())
}

/// Whether the stream subject `pattern` (which may hold `*` and `>`) matches
/// every subject that `filter` matches, e.g. `orders.>` covers
/// `orders.events.>`, and `a.*.>` covers `a.b.>`, but `a.*` does not cover
/// `a.>`.
pub(crate) fn covers(pattern: &str, filter: &str) -> bool {
    let mut filter_tokens = filter.split('.');
    for token in pattern.split('.') {
        let Some(wanted) = filter_tokens.next() else {
            return false;
        };
        match token {
            ">" => return true,
            "*" if wanted != ">" => {}
            literal if literal == wanted && wanted != "*" && wanted != ">" => {}
            _ => return false,
        }
    }
    filter_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_ids_round_trip_through_one_token() {
        let subjects = Subjects::new("es.events");
        for id in eventsourced::testkit::ODD_IDS {
            let subject = subjects.entity("counter", id);
            assert_eq!(subject.split('.').count(), 4, "{subject}");
            assert!(
                subject
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{subject}"
            );
            assert_eq!(subjects.id_of(&subject).as_deref(), Ok(*id));
        }
    }

    #[test]
    fn type_filter_matches_only_its_type() {
        let subjects = Subjects::new("es");
        assert_eq!(subjects.entity_type("counter"), "es.Y291bnRlcg.*");
        assert_eq!(subjects.entity("counter", "a.b"), "es.Y291bnRlcg.YS5i");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("eventsourced").is_ok());
        assert!(check_prefix("a.b-c_d").is_ok());
        assert!(check_prefix(&"p".repeat(MAX_PREFIX_BYTES)).is_ok());
        assert!(check_prefix("INBOX.a").is_ok());
        assert!(check_prefix("app._INBOX").is_ok());
        let long = "p".repeat(MAX_PREFIX_BYTES + 1);
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a.*",
            ">",
            "$JS",
            "_INBOX",
            "_INBOX.app",
            &long,
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn stream_subjects_cover_the_prefix_filter() {
        for (pattern, filter) in [
            ("es.>", "es.>"),
            ("es.>", "es.events.>"),
            (">", "es.>"),
            ("*.>", "es.>"),
            ("a.*.>", "a.b.>"),
        ] {
            assert!(covers(pattern, filter), "{pattern} covers {filter}");
        }
        for (pattern, filter) in [
            ("other.>", "es.>"),
            ("es.events.>", "es.>"),
            ("es.*", "es.>"),
            ("es", "es.>"),
            ("es.a.>", "es.*.>"),
        ] {
            assert!(
                !covers(pattern, filter),
                "{pattern} does not cover {filter}"
            );
        }
    }

    #[test]
    fn long_ids_are_refused() {
        assert!(validate("t", &"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(matches!(
            validate("t", &"x".repeat(MAX_ID_BYTES + 1)),
            Err(EventLogError::InvalidId { .. })
        ));
        assert!(validate("", "a").is_err());
        assert!(validate("t", "").is_err());
    }
}
