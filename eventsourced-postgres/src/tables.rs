//! Validated schema and table names, and every SQL statement built from them.

use crate::{
    PostgresError,
    shape::{Column, Key, Shape},
};

/// The most bytes of a table name, so derived index names stay below
/// PostgreSQL's 63-byte identifier limit.
const MAX_TABLE_LEN: usize = 40;
/// PostgreSQL's identifier limit.
const MAX_IDENT_LEN: usize = 63;

/// Schema and table names that passed validation (lowercase ASCII letters,
/// digits and `_`, not starting with a digit or `pg_`); only these ever reach
/// SQL text, always double-quoted.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
///
/// # let url = std::env::var("DATABASE_URL")
/// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
/// let mut config = PostgresConfig::from_url(&url)?;
/// # config.pool_size = 2;
/// config.schema = "doc_tables".to_owned();
/// let log = PostgresEventLog::new(config).await?;
/// let tables = log.tables();
/// assert_eq!(tables.schema(), "doc_tables");
/// assert_eq!(tables.events(), r#""doc_tables"."events""#);
/// assert_eq!(tables.snapshots(), r#""doc_tables"."snapshots""#);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    schema: String,
    events: String,
    snapshots: String,
}

/// Checks that `name` is a plain lowercase SQL identifier: `[a-z_][a-z0-9_]*`,
/// at most `max` bytes.
fn validate_identifier(field: &'static str, name: &str, max: usize) -> Result<(), PostgresError> {
    let invalid = |reason: String| PostgresError::InvalidConfig { field, reason };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(invalid("must not be empty".to_owned())),
        Some(c) if !(c.is_ascii_lowercase() || c == '_') => {
            return Err(invalid(format!(
                "{name:?} must start with a lowercase ASCII letter or `_`"
            )));
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid(format!(
            "{name:?} may contain only lowercase ASCII letters, digits and `_`"
        )));
    }
    if name.len() > max {
        return Err(invalid(format!("{name:?} is longer than {max} bytes")));
    }
    if name.starts_with("pg_") {
        return Err(invalid(format!(
            "{name:?} starts with `pg_`, which PostgreSQL reserves"
        )));
    }
    Ok(())
}

/// The columns that name an event's or a snapshot's entity and seq_no, as
/// the shape checks expect them: text compared bytewise (`COLLATE "C"`).
const TYPE_NAME: Column = Column {
    name: "type_name",
    sql_type: "text",
    collation: Some("C"),
};
const ID: Column = Column {
    name: "id",
    sql_type: "text",
    collation: Some("C"),
};
const SEQ_NO: Column = Column {
    name: "seq_no",
    sql_type: "bigint",
    collation: None,
};

impl Tables {
    /// Validates the three names.
    pub(crate) fn new(schema: &str, events: &str, snapshots: &str) -> Result<Self, PostgresError> {
        validate_identifier("schema", schema, MAX_IDENT_LEN)?;
        validate_identifier("events-table", events, MAX_TABLE_LEN)?;
        validate_identifier("snapshots-table", snapshots, MAX_TABLE_LEN)?;
        // Tables and indexes share one namespace per schema: the snapshot
        // table and its primary key must not be one of the log's relations
        // (else `CREATE TABLE IF NOT EXISTS` skips it and every save fails).
        let log_relations = [
            "",
            "_pkey",
            "_type_position_key",
            "_position",
            "_position_pkey",
        ]
        .map(|suffix| format!("{events}{suffix}"));
        let clash = [snapshots.to_owned(), format!("{snapshots}_pkey")]
            .into_iter()
            .find(|name| log_relations.contains(name));
        if let Some(name) = clash {
            return Err(PostgresError::InvalidConfig {
                field: "snapshots-table",
                reason: format!(
                    "{snapshots:?} would use the name {name:?}, which the event table {events:?} uses for itself or its position table; choose another snapshots-table"
                ),
            });
        }
        Ok(Tables {
            schema: schema.to_owned(),
            events: events.to_owned(),
            snapshots: snapshots.to_owned(),
        })
    }

    /// The schema name (validated, unquoted).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_tables_schema".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// assert_eq!(log.tables().schema(), "doc_tables_schema");
    /// # Ok(()) }
    /// ```
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The qualified, quoted event table, e.g. `"public"."events"`, ready for SQL.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_tables_events".to_owned();
    /// config.events_table = "orders".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// assert_eq!(log.tables().events(), r#""doc_tables_events"."orders""#);
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.events)
    }

    /// The qualified, quoted snapshot table, ready for SQL.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_tables_snapshots".to_owned();
    /// config.snapshots_table = "order_snapshots".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// assert_eq!(log.tables().snapshots(), r#""doc_tables_snapshots"."order_snapshots""#);
    /// # Ok(()) }
    /// ```
    pub fn snapshots(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.snapshots)
    }

    /// The key of the transaction-scoped advisory lock that serializes position
    /// assignment for the event table (FNV-1a of the qualified name). Any other
    /// writer of the table must take `pg_advisory_xact_lock(key)` before it
    /// reads the highest position and hold it until COMMIT.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_tables_lock_key".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// log.setup().await?;
    /// let mut client = log.pool().get().await?;
    /// let tx = client.transaction().await?;
    /// tx.execute("SELECT pg_advisory_xact_lock($1)", &[&log.tables().lock_key()]).await?;
    /// let sql = format!("SELECT last FROM {}", log.tables().positions());
    /// let last: i64 = tx.query_one(&sql, &[]).await?.get(0);
    /// assert_eq!(last, 0); // nothing appended yet
    /// tx.commit().await?;
    /// # drop(client);
    /// # log.pool().get().await?.batch_execute("DROP SCHEMA doc_tables_lock_key CASCADE").await?;
    /// # Ok(()) }
    /// ```
    pub fn lock_key(&self) -> i64 {
        i64::from_ne_bytes(self.hash("lock").to_ne_bytes())
    }

    /// The advisory lock key that serializes `setup` runs.
    pub(crate) fn setup_lock_key(&self) -> i64 {
        i64::from_ne_bytes(self.hash("setup").to_ne_bytes())
    }

    /// The LISTEN/NOTIFY channel on which writers announce commits to the
    /// event table.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_tables_channel".to_owned();
    /// let log = PostgresEventLog::new(config.clone()).await?;
    /// let channel = log.tables().channel();
    /// assert!(channel.starts_with("es_"));
    /// // Every process with the same schema and event table uses the same channel.
    /// let other = PostgresEventLog::new(config).await?;
    /// assert_eq!(other.tables().channel(), channel);
    /// # Ok(()) }
    /// ```
    pub fn channel(&self) -> String {
        format!("es_{:016x}", self.hash("notify"))
    }

    fn hash(&self, purpose: &str) -> u64 {
        let text = format!(
            "eventsourced-postgres:{purpose}:{}.{}",
            self.schema, self.events
        );
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The qualified, quoted one-row table holding the last assigned
    /// position, e.g. `"public"."events_position"`. Any other writer of the
    /// event table must take positions from it (under the lock of
    /// [`lock_key`](Self::lock_key)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use eventsourced::{EventLog, SeqNo};
    /// use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
    ///
    /// # let url = std::env::var("DATABASE_URL")
    /// #     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    /// let mut config = PostgresConfig::from_url(&url)?;
    /// # config.pool_size = 2;
    /// config.schema = "doc_tables_positions".to_owned();
    /// let log = PostgresEventLog::new(config).await?;
    /// log.setup().await?;
    /// log.append("counter", "c-1", SeqNo::ZERO, &["+1".into(), "+2".into()]).await?;
    /// assert_eq!(log.tables().positions(), r#""doc_tables_positions"."events_position""#);
    /// let sql = format!("SELECT last FROM {}", log.tables().positions());
    /// let last: i64 = log.pool().get().await?.query_one(&sql, &[]).await?.get(0);
    /// assert_eq!(last, 2);
    /// # log.pool().get().await?.batch_execute("DROP SCHEMA doc_tables_positions CASCADE").await?;
    /// # Ok(()) }
    /// ```
    pub fn positions(&self) -> String {
        format!("\"{}\".\"{}_position\"", self.schema, self.events)
    }

    /// Creates the schema unless it exists. Not `CREATE SCHEMA IF NOT
    /// EXISTS`: that needs the CREATE privilege on the database even when
    /// the schema exists, which a role that was given its own schema lacks.
    fn create_schema_sql(&self) -> String {
        let schema = &self.schema;
        format!(
            "DO $es$ BEGIN
                 IF to_regnamespace('\"{schema}\"') IS NULL THEN CREATE SCHEMA \"{schema}\"; END IF;
             EXCEPTION WHEN duplicate_schema OR unique_violation THEN NULL;
             END $es$;"
        )
    }

    pub(crate) fn setup_events_sql(&self) -> String {
        let (table, name, positions) = (self.events(), &self.events, self.positions());
        let create_schema = self.create_schema_sql();
        format!(
            "{create_schema}
             CREATE TABLE IF NOT EXISTS {table} (
                 position  BIGINT NOT NULL CHECK (position > 0),
                 type_name TEXT COLLATE \"C\" NOT NULL,
                 id        TEXT COLLATE \"C\" NOT NULL,
                 seq_no    BIGINT NOT NULL CHECK (seq_no > 0),
                 event     BYTEA  NOT NULL,
                 CONSTRAINT \"{name}_pkey\" PRIMARY KEY (type_name, id, seq_no),
                 CONSTRAINT \"{name}_type_position_key\" UNIQUE (type_name, position)
             );
             CREATE TABLE IF NOT EXISTS {positions} (
                 only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
                 last     BIGINT  NOT NULL CHECK (last >= 0)
             );"
        )
    }

    /// The event table as [`setup_events_sql`](Self::setup_events_sql)
    /// creates it: `setup` refuses an existing table of this name that
    /// differs (see [`crate::shape`]). Keep the two in step.
    pub(crate) fn events_shape(&self) -> Shape {
        const COLUMNS: &[Column] = &[
            Column {
                name: "position",
                sql_type: "bigint",
                collation: None,
            },
            TYPE_NAME,
            ID,
            SEQ_NO,
            Column {
                name: "event",
                sql_type: "bytea",
                collation: None,
            },
        ];
        const KEYS: &[Key] = &[
            Key {
                columns: &["type_name", "id", "seq_no"],
                purpose: "which makes a stale append fail instead of writing a second event \
                          with the same seq_no",
            },
            Key {
                columns: &["type_name", "position"],
                purpose: "which events_by_type reads in position order",
            },
        ];
        Shape {
            table: self.events(),
            columns: COLUMNS,
            keys: KEYS,
            checks: &["position > 0", "seq_no > 0"],
        }
    }

    /// The position table as [`setup_events_sql`](Self::setup_events_sql)
    /// creates it (one row, kept to one by the key on `only_row`).
    pub(crate) fn positions_shape(&self) -> Shape {
        const COLUMNS: &[Column] = &[
            Column {
                name: "only_row",
                sql_type: "boolean",
                collation: None,
            },
            Column {
                name: "last",
                sql_type: "bigint",
                collation: None,
            },
        ];
        const KEYS: &[Key] = &[Key {
            columns: &["only_row"],
            purpose: "which keeps the table to one row",
        }];
        Shape {
            table: self.positions(),
            columns: COLUMNS,
            keys: KEYS,
            checks: &[],
        }
    }

    /// Gives a new position table its row: the highest stored position (0
    /// for a new log). Runs after the shape check, which makes sure
    /// `only_row` has the key that `ON CONFLICT` names.
    pub(crate) fn seed_positions_sql(&self) -> String {
        let (table, positions) = (self.events(), self.positions());
        format!(
            "INSERT INTO {positions} (last)
                 SELECT COALESCE(max(position), 0) FROM {table}
                 ON CONFLICT (only_row) DO NOTHING"
        )
    }

    /// The snapshot table as [`setup_snapshots_sql`](Self::setup_snapshots_sql)
    /// creates it: `setup` refuses an existing table of this name that
    /// differs. Keep the two in step.
    pub(crate) fn snapshots_shape(&self) -> Shape {
        const COLUMNS: &[Column] = &[
            TYPE_NAME,
            ID,
            SEQ_NO,
            Column {
                name: "state",
                sql_type: "bytea",
                collation: None,
            },
        ];
        const KEYS: &[Key] = &[Key {
            columns: &["type_name", "id"],
            purpose: "which keeps one snapshot per entity, the newest",
        }];
        Shape {
            table: self.snapshots(),
            columns: COLUMNS,
            keys: KEYS,
            checks: &[],
        }
    }

    pub(crate) fn setup_snapshots_sql(&self) -> String {
        let (table, name) = (self.snapshots(), &self.snapshots);
        let create_schema = self.create_schema_sql();
        format!(
            "{create_schema}
             CREATE TABLE IF NOT EXISTS {table} (
                 type_name TEXT COLLATE \"C\" NOT NULL,
                 id        TEXT COLLATE \"C\" NOT NULL,
                 seq_no    BIGINT NOT NULL CHECK (seq_no >= 0),
                 state     BYTEA  NOT NULL,
                 CONSTRAINT \"{name}_pkey\" PRIMARY KEY (type_name, id)
             );"
        )
    }

    /// Begins the checking group-commit transaction and takes the position
    /// lock; sent pipelined with [`append_sql`](Self::append_sql) and
    /// `COMMIT`. The lock comes first, in a statement of its own, so that the
    /// append statement's snapshot (READ COMMITTED: taken when it starts)
    /// sees every commit that held the lock before.
    pub(crate) fn begin_append_sql(&self) -> String {
        format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({})",
            self.lock_key()
        )
    }

    /// One group commit: `$1` type names, `$2` ids, `$3` expected last seq_nos
    /// (one per request); `$4` request number (1-based), `$5` seq_no, `$6`
    /// bytes, `$7` type name and `$8` id (one per event). Positions are taken
    /// from the one-row position table, one per event in order (a conflicting
    /// request leaves a gap: positions need only increase). Returns the
    /// actual last seq_no of each request before the append and the number of
    /// rows inserted; a request is written only if actual equals expected.
    pub(crate) fn append_sql(&self) -> String {
        let (table, positions) = (self.events(), self.positions());
        format!(
            "WITH req AS MATERIALIZED (
                 SELECT r.n, r.expected,
                        COALESCE((SELECT max(e.seq_no) FROM {table} e
                                  WHERE e.type_name = r.type_name AND e.id = r.id), 0) AS actual
                 FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS r(type_name, id, expected, n)
             ),
             checked AS (
                 SELECT array_agg(actual ORDER BY n) AS actual,
                        array_agg(actual = expected ORDER BY n) AS ok
                 FROM req
             ),
             base AS (
                 UPDATE {positions} SET last = last + cardinality($6::bytea[])
                 RETURNING last - cardinality($6::bytea[]) AS p
             ),
             ins AS (
                 INSERT INTO {table} (position, type_name, id, seq_no, event)
                 SELECT base.p + ev.k, ev.type_name, ev.id, ev.seq_no, ev.event
                 FROM unnest($4::int4[], $5::int8[], $6::bytea[], $7::text[], $8::text[])
                      WITH ORDINALITY AS ev(req, seq_no, event, type_name, id, k)
                 CROSS JOIN base
                 CROSS JOIN checked
                 WHERE checked.ok[ev.req]
                 RETURNING 1
             )
             SELECT (SELECT actual FROM checked) AS actual,
                    (SELECT count(*) FROM ins) AS inserted"
        )
    }

    /// The last seq_no of each (`$1[n]`, `$2[n]`), in order.
    /// Announces commits to listeners of other processes: its own
    /// transaction after the data's COMMIT, without waiting for a WAL flush
    /// (a lost notification only delays a follower until its next poll).
    pub(crate) fn notify_sql(&self) -> String {
        format!(
            "BEGIN; SET LOCAL synchronous_commit TO off; SELECT pg_notify('{}', ''); COMMIT",
            self.channel()
        )
    }

    /// The append of a batch whose every request is known to have its
    /// predecessor stored: one statement, its own transaction. It takes the
    /// position lock (joined into the UPDATE, so it is held before the
    /// positions row changes, until the statement commits), then inserts; a
    /// stale request violates the primary key, which fails the whole
    /// statement (and the writer then uses [`append_sql`](Self::append_sql)).
    /// It reads nothing through its snapshot: the UPDATE of the positions row
    /// waits for the row and continues from its latest committed version.
    /// `$1` type name, `$2` id, `$3` bytes, `$4` seq_no (one per event).
    pub(crate) fn append_fast_sql(&self) -> String {
        let (table, positions, key) = (self.events(), self.positions(), self.lock_key());
        format!(
            "WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({key})),
             base AS (
                 UPDATE {positions} SET last = last + cardinality($3::bytea[])
                 FROM lock
                 RETURNING last - cardinality($3::bytea[]) AS p
             )
             INSERT INTO {table} (position, type_name, id, seq_no, event)
             SELECT base.p + ev.k, ev.type_name, ev.id, ev.seq_no, ev.event
             FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[])
                  WITH ORDINALITY AS ev(type_name, id, event, seq_no, k)
             CROSS JOIN base"
        )
    }

    pub(crate) fn last_seq_nos_sql(&self) -> String {
        format!(
            "SELECT COALESCE((SELECT max(e.seq_no) FROM {} e
                              WHERE e.type_name = r.type_name AND e.id = r.id), 0)
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(type_name, id, n)
             ORDER BY r.n",
            self.events()
        )
    }

    pub(crate) fn events_by_id_sql(&self) -> String {
        format!(
            "SELECT seq_no, event FROM {} WHERE type_name = $1 AND id = $2 AND seq_no >= $3 ORDER BY type_name, id, seq_no",
            self.events()
        )
    }

    pub(crate) fn events_by_type_sql(&self) -> String {
        format!(
            "SELECT position, id, seq_no, event FROM {} WHERE type_name = $1 AND position >= $2 ORDER BY type_name, position LIMIT $3",
            self.events()
        )
    }

    pub(crate) fn save_snapshot_sql(&self) -> String {
        format!(
            "INSERT INTO {} AS s (type_name, id, seq_no, state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (type_name, id) DO UPDATE SET seq_no = EXCLUDED.seq_no, state = EXCLUDED.state
             WHERE s.seq_no IS NULL OR s.state IS NULL OR s.seq_no <= EXCLUDED.seq_no",
            self.snapshots()
        )
    }

    /// Whether a snapshot of each (`$1[n]`, `$2[n]`) is stored, and its
    /// seq_no and state, in order.
    pub(crate) fn load_snapshots_sql(&self) -> String {
        format!(
            "SELECT s.type_name IS NOT NULL, s.seq_no, s.state
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(type_name, id, n)
             LEFT JOIN {} s ON s.type_name = r.type_name AND s.id = r.id
             ORDER BY r.n",
            self.snapshots()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        assert!(Tables::new("es_test_1", "events", "snapshots").is_ok());
        for bad in [
            "", "Events", "1events", "ev-ents", "ev\"ents", "ev ents", "pg_x", "évents", "a;drop",
        ] {
            assert!(
                Tables::new("public", bad, "snapshots").is_err(),
                "{bad:?} must be refused"
            );
            assert!(
                Tables::new(bad, "events", "snapshots").is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(Tables::new("public", &"e".repeat(41), "snapshots").is_err());
        assert!(Tables::new(&"s".repeat(64), "events", "snapshots").is_err());
    }

    #[test]
    fn table_names_reach_every_statement() {
        let tables = Tables::new("my_schema", "my_events", "my_snaps").expect("valid");
        for sql in [
            tables.append_sql(),
            tables.append_fast_sql(),
            tables.last_seq_nos_sql(),
            tables.events_by_id_sql(),
            tables.events_by_type_sql(),
            tables.setup_events_sql(),
            tables.seed_positions_sql(),
        ] {
            assert!(sql.contains("\"my_schema\".\"my_events\""), "{sql}");
        }
        for sql in [
            tables.save_snapshot_sql(),
            tables.load_snapshots_sql(),
            tables.setup_snapshots_sql(),
        ] {
            assert!(sql.contains("\"my_schema\".\"my_snaps\""), "{sql}");
        }
    }
}
