//! SQLite helpers: a totals read model kept with the projection's transaction.

use eventsourced_projection::{
    HandlerError, ProjectedEvent,
    sqlite::{
        SqliteHandler, SqliteOffsetStore,
        rusqlite::{Transaction, params},
    },
};
use std::collections::HashMap;

/// Creates the totals table.
pub async fn create_totals(store: &SqliteOffsetStore) {
    store
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, total INTEGER NOT NULL,
                     events INTEGER NOT NULL, last_seq_no INTEGER NOT NULL)",
            )
        })
        .await
        .expect("create totals");
}

/// id → (total, events, last_seq_no).
pub async fn totals(store: &SqliteOffsetStore) -> HashMap<String, (i64, i64, i64)> {
    store
        .with_connection(|c| {
            let mut stmt = c.prepare("SELECT id, total, events, last_seq_no FROM totals")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?;
            rows.collect()
        })
        .await
        .expect("read totals")
}

/// Totals per entity; fails (after writing) on the positions in `fail`.
#[derive(Debug, Default)]
pub struct SqTotals {
    pub fail: HashMap<u64, u32>,
}

impl SqliteHandler for SqTotals {
    type Event = i64;

    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        e: &ProjectedEvent<i64>,
    ) -> Result<(), HandlerError> {
        let seq_no = e
            .seq_no
            .to_i64()
            .ok_or_else(|| HandlerError::msg("seq_no too large"))?;
        tx.execute(
            "INSERT INTO totals (id, total, events, last_seq_no) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (id) DO UPDATE SET total = total + excluded.total,
             events = events + 1, last_seq_no = excluded.last_seq_no",
            params![e.id, e.event, seq_no],
        )?;
        if let Some(n) = self.fail.get_mut(&e.position.get())
            && *n > 0
        {
            *n -= 1;
            return Err(HandlerError::msg(format!(
                "planned failure at {}",
                e.position
            )));
        }
        Ok(())
    }

    fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute("DELETE FROM totals", [])?;
        Ok(())
    }
}
