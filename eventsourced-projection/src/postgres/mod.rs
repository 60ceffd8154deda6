//! PostgreSQL: offsets, exactly-once handlers and an advisory-lock lease
//! (cargo feature `postgres`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # use deadpool_postgres::{Manager, Pool};
//! # use eventsourced_projection::postgres::tokio_postgres::NoTls;
//! # let url = std::env::var("DATABASE_URL")
//! #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
//! # let pool = Pool::builder(Manager::new(url.parse().unwrap(), NoTls)).max_size(2).build().unwrap();
//! # let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
//! # let schema = format!("doc_mod_{}_{nanos}", std::process::id());
//! use eventsourced::Position;
//! use eventsourced_projection::{OffsetStore, postgres::PostgresOffsetStore};
//!
//! let store = PostgresOffsetStore::new(pool.clone(), &schema).unwrap();
//! store.setup().await.unwrap();
//! store.save("totals", Position::new(8)).await.unwrap();
//! assert_eq!(store.load("totals").await.unwrap(), Some(Position::new(8)));
//! # pool.get().await.unwrap().batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.unwrap();
//! # }
//! ```

mod lag;
mod lease;
mod offsets;

pub use eventsourced_postgres::PostgresEventLog;
pub use lag::PostgresLag;
pub use lease::PostgresLease;
pub use offsets::{PostgresExactlyOnce, PostgresHandler, PostgresOffsetStore};
pub use tokio_postgres;

use crate::ProjectionError;

/// Checks that `name` is a plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]*`, at
/// most 63 bytes), so it can be quoted into statements safely.
pub(crate) fn validate_identifier(what: &'static str, name: &str) -> Result<(), ProjectionError> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid_start && valid_rest && name.len() <= 63 {
        Ok(())
    } else {
        Err(ProjectionError::InvalidConfig {
            what,
            reason: format!(
                "{name:?} is not a plain SQL identifier: use letters, digits and '_', starting with a letter or '_', at most 63 bytes"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_checked() {
        assert!(super::validate_identifier("schema", "public").is_ok());
        assert!(super::validate_identifier("schema", "_p1").is_ok());
        for bad in ["", "1a", "a-b", "a\"b", "a; drop table x", &"a".repeat(64)] {
            assert!(super::validate_identifier("schema", bad).is_err(), "{bad}");
        }
    }
}
