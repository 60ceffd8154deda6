//! Statements on pooled connections that survive the loss of a connection.
//!
//! A connection the server terminated (restart, failover,
//! `pg_terminate_backend`) can look alive in the pool until it is used. For
//! reads and idempotent writes, [`run`] then drops that connection and runs
//! the statement again on another one, so callers see an error only when the
//! server is really unreachable. Appends never go through here: their outcome
//! is unknown when the connection breaks, and the writer reports that instead.

use crate::PostgresError;
use deadpool_postgres::{Object, Pool};
use futures::future::BoxFuture;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Where and what a statement runs, for errors.
pub(crate) struct Target<'a> {
    pub(crate) pool: &'a Pool,
    /// The server, as [`PostgresConfig::place`](crate::PostgresConfig) says it.
    pub(crate) place: &'a str,
    pub(crate) timeout: Duration,
    pub(crate) operation: &'static str,
    pub(crate) table: &'a str,
}

/// Runs `statement` on a pooled connection within the target's timeout and
/// returns the connection with the result (a row stream may need it kept).
///
/// Only for statements that may safely run twice: when the connection turns
/// out to be dead, it is discarded and the statement runs again on another
/// one, up to once per pooled connection plus one. (`statement` returns a
/// boxed future so that the caller's future stays `Send`.)
pub(crate) async fn run<T>(
    target: &Target<'_>,
    statement: impl for<'c> Fn(&'c Object) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
) -> Result<(Object, T), PostgresError> {
    let attempts = target.pool.status().max_size + 1;
    let mut attempt = 1;
    loop {
        let client = target
            .pool
            .get()
            .await
            .map_err(|e| PostgresError::connect(target.place.to_owned(), e))?;
        match tokio::time::timeout(target.timeout, statement(&client)).await {
            Ok(Ok(result)) => return Ok((client, result)),
            Ok(Err(error)) if connection_lost(&error) && attempt < attempts => {
                tracing::debug!(
                    %error,
                    operation = target.operation,
                    "connection lost; running the statement again on another one"
                );
                drop(Object::take(client));
                attempt += 1;
            }
            Ok(Err(error)) => {
                if connection_lost(&error) {
                    drop(Object::take(client));
                }
                return Err(PostgresError::query(target.operation, target.table, error));
            }
            Err(_) => {
                // Do not hand a connection with a stuck statement back to the pool.
                drop(Object::take(client));
                return Err(PostgresError::Timeout {
                    operation: target.operation,
                    timeout: target.timeout,
                });
            }
        }
    }
}

/// Whether `error` means the connection is gone, not that the statement
/// failed: the connection is closed, the server is shutting down or
/// terminated this backend, or the connection broke (SQLSTATE class 08).
pub(crate) fn connection_lost(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || error.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        })
}
