//! The catalog check `setup` makes of the tables it keeps.
//!
//! `CREATE TABLE IF NOT EXISTS` keeps a table of the same name whatever its
//! columns and keys. The log cannot run on just any such table: its
//! one-statement append detects a stale expectation only through the
//! primary-key violation, so on a table without that key a stale append would write a
//! second event with the same seq_no and report success. So after creating
//! what is missing, `setup` reads the catalog (in the same transaction, under
//! the setup lock) and refuses a table that differs from what it creates,
//! with [`PostgresError::IncompatibleTable`] listing every difference. Keys
//! are found by their columns in `pg_index`, not by constraint name, so a
//! table whose keys were renamed or recreated still passes. This runs once
//! per `setup`, never on the append path.

use crate::PostgresError;

/// A column the log reads or writes.
#[derive(Debug)]
pub(crate) struct Column {
    pub(crate) name: &'static str,
    /// As `format_type` spells it, e.g. `bigint`.
    pub(crate) sql_type: &'static str,
    /// The collation of a text column: `"C"` makes key comparisons bytewise.
    pub(crate) collation: Option<&'static str>,
}

/// A unique index the log relies on, by its key columns in order.
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) columns: &'static [&'static str],
    /// What the log needs it for, for the error.
    pub(crate) purpose: &'static str,
}

/// What `setup` requires of an existing table. Every column must be there with
/// its type, collation and `NOT NULL`; other columns are fine as long as the
/// log's inserts can leave them out (nullable or with a default).
#[derive(Debug)]
pub(crate) struct Shape {
    /// The qualified, quoted name.
    pub(crate) table: String,
    pub(crate) columns: &'static [Column],
    pub(crate) keys: &'static [Key],
    /// The CHECK constraints the log relies on, as its `CREATE TABLE` writes
    /// them (e.g. `seq_no > 0`): without them, rows a reader must refuse as
    /// corrupt can be stored.
    pub(crate) checks: &'static [&'static str],
}

/// Relation kind, columns and unique indexes of `$1` (a qualified name).
const RELKIND_SQL: &str = "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1)";

const COLUMNS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
            a.attnotnull, co.collname::text,
            a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
     FROM pg_attribute a
     LEFT JOIN pg_collation co ON co.oid = a.attcollation
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum";

/// The key columns of each index that enforces uniqueness on every insert:
/// unique, checked immediately (not `DEFERRABLE`), valid, not partial, and on
/// plain columns. `INCLUDE` columns are not key columns.
const UNIQUE_KEYS_SQL: &str = "SELECT ARRAY(
         SELECT a.attname::text
         FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE k.n <= i.indnkeyatts
         ORDER BY k.n)
     FROM pg_index i
     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indimmediate
       AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL";

/// The validated CHECK constraints of `$1`, as `pg_get_constraintdef` spells them.
const CHECKS_SQL: &str = "SELECT pg_get_constraintdef(c.oid)
     FROM pg_constraint c
     WHERE c.conrelid = to_regclass($1) AND c.contype = 'c' AND c.convalidated";

/// A CHECK's text without what its spelling may vary in (the parentheses,
/// quotes and spaces that `pg_get_constraintdef` adds), lowercased.
fn normalized_check(definition: &str) -> String {
    let definition = definition.trim();
    let definition = definition
        .strip_prefix("CHECK")
        .or_else(|| definition.strip_prefix("check"))
        .unwrap_or(definition);
    definition
        .chars()
        .filter(|c| !matches!(c, '(' | ')' | '"') && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Refuses the existing table `shape.table` (which must exist) unless it has
/// the shape; a failed catalog query is a [`PostgresError::Setup`].
pub(crate) async fn check(
    client: &tokio_postgres::Transaction<'_>,
    shape: &Shape,
) -> Result<(), PostgresError> {
    let setup_error = |source| PostgresError::Setup {
        table: shape.table.clone(),
        source,
    };
    let table = [&shape.table as &(dyn tokio_postgres::types::ToSql + Sync)];
    let kind: Option<String> = client
        .query_opt(RELKIND_SQL, &table)
        .await
        .map_err(setup_error)?
        .map(|row| row.get(0));
    let differences = match kind.as_deref() {
        // An ordinary or a partitioned table.
        Some("r" | "p") => {
            let columns = client
                .query(COLUMNS_SQL, &table)
                .await
                .map_err(setup_error)?;
            let columns: Vec<Found> = columns
                .iter()
                .map(|row| Found {
                    name: row.get(0),
                    sql_type: row.get(1),
                    not_null: row.get(2),
                    collation: row.get(3),
                    has_default: row.get(4),
                })
                .collect();
            let keys = client
                .query(UNIQUE_KEYS_SQL, &table)
                .await
                .map_err(setup_error)?;
            let keys: Vec<Vec<String>> = keys.iter().map(|row| row.get(0)).collect();
            let checks = client
                .query(CHECKS_SQL, &table)
                .await
                .map_err(setup_error)?;
            let checks: Vec<String> = checks.iter().map(|row| row.get(0)).collect();
            differences(shape, &columns, &keys, &checks)
        }
        Some(kind) => vec![format!("it is {}, not a table", relation_kind(kind))],
        // Created by this very transaction's `CREATE TABLE IF NOT EXISTS`.
        None => vec!["it does not exist after CREATE TABLE".to_owned()],
    };
    if differences.is_empty() {
        Ok(())
    } else {
        Err(PostgresError::IncompatibleTable {
            table: shape.table.clone(),
            differences,
        })
    }
}

/// A column as the catalog describes it.
#[derive(Debug)]
struct Found {
    name: String,
    sql_type: String,
    not_null: bool,
    collation: Option<String>,
    /// A default, an identity or a generated column: inserts may omit it.
    has_default: bool,
}

/// Every way the found columns and unique keys differ from `shape`.
fn differences(
    shape: &Shape,
    columns: &[Found],
    unique_keys: &[Vec<String>],
    checks: &[String],
) -> Vec<String> {
    let mut differences = Vec::new();
    for want in shape.columns {
        let Some(found) = columns.iter().find(|c| c.name == want.name) else {
            let collation = want
                .collation
                .map(|c| format!(" COLLATE \"{c}\""))
                .unwrap_or_default();
            differences.push(format!(
                "no column \"{}\" ({}{collation} NOT NULL)",
                want.name, want.sql_type
            ));
            continue;
        };
        if found.sql_type != want.sql_type {
            differences.push(format!(
                "column \"{}\" is {}, not {}",
                want.name, found.sql_type, want.sql_type
            ));
        }
        if !found.not_null {
            differences.push(format!("column \"{}\" allows NULL", want.name));
        }
        if let Some(collation) = want.collation
            && found.collation.as_deref() != Some(collation)
        {
            differences.push(format!(
                "column \"{}\" has collation {}, not \"{collation}\"",
                want.name,
                found
                    .collation
                    .as_deref()
                    .map_or_else(|| "none".to_owned(), |c| format!("\"{c}\"")),
            ));
        }
    }
    for extra in columns
        .iter()
        .filter(|c| !shape.columns.iter().any(|want| want.name == c.name))
    {
        if extra.not_null && !extra.has_default {
            differences.push(format!(
                "column \"{}\" is NOT NULL without a default, so the log's inserts would fail",
                extra.name
            ));
        }
    }
    for key in shape.keys {
        if !unique_keys
            .iter()
            .any(|found| found.as_slice() == key.columns)
        {
            differences.push(format!(
                "no PRIMARY KEY or UNIQUE constraint on ({}) (checked immediately, \
                 not partial), {}",
                key.columns.join(", "),
                key.purpose
            ));
        }
    }
    let found: Vec<String> = checks.iter().map(|c| normalized_check(c)).collect();
    for check in shape.checks {
        if !found.contains(&normalized_check(check)) {
            differences.push(format!(
                "no CHECK ({check}): rows outside it would be stored, and refused when read"
            ));
        }
    }
    differences
}

fn relation_kind(kind: &str) -> String {
    match kind {
        "v" => "a view".to_owned(),
        "m" => "a materialized view".to_owned(),
        "f" => "a foreign table".to_owned(),
        "S" => "a sequence".to_owned(),
        "i" | "I" => "an index".to_owned(),
        "c" => "a composite type".to_owned(),
        other => format!("a relation of kind {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        Column {
            name: "id",
            sql_type: "text",
            collation: Some("C"),
        },
        Column {
            name: "n",
            sql_type: "bigint",
            collation: None,
        },
    ];
    const KEYS: &[Key] = &[Key {
        columns: &["id", "n"],
        purpose: "for the test",
    }];

    fn shape() -> Shape {
        Shape {
            table: "\"s\".\"t\"".to_owned(),
            columns: COLUMNS,
            keys: KEYS,
            checks: &["n > 0"],
        }
    }

    fn found(name: &str, sql_type: &str, not_null: bool, collation: Option<&str>) -> Found {
        Found {
            name: name.to_owned(),
            sql_type: sql_type.to_owned(),
            not_null,
            collation: collation.map(str::to_owned),
            has_default: false,
        }
    }

    #[test]
    fn the_expected_shape_passes_and_nullable_extra_columns_are_fine() {
        let columns = [
            found("id", "text", true, Some("C")),
            found("n", "bigint", true, None),
            found("note", "text", false, Some("default")),
        ];
        let keys = [vec!["id".to_owned(), "n".to_owned()]];
        let checks = [
            "CHECK ((n > 0))".to_owned(),
            "CHECK ((id <> ''))".to_owned(),
        ];
        assert_eq!(
            differences(&shape(), &columns, &keys, &checks),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_difference_is_listed() {
        let columns = [
            found("id", "text", false, Some("default")),
            found("extra", "integer", true, None),
        ];
        // The key in another column order does not count.
        let keys = [vec!["n".to_owned(), "id".to_owned()]];
        assert_eq!(
            differences(&shape(), &columns, &keys, &["CHECK ((n >= 0))".to_owned()]),
            [
                "column \"id\" allows NULL",
                "column \"id\" has collation \"default\", not \"C\"",
                "no column \"n\" (bigint NOT NULL)",
                "column \"extra\" is NOT NULL without a default, so the log's inserts would fail",
                "no PRIMARY KEY or UNIQUE constraint on (id, n) (checked immediately, not partial), for the test",
                "no CHECK (n > 0): rows outside it would be stored, and refused when read",
            ]
        );
        let columns = [
            found("id", "character varying(10)", true, Some("C")),
            found("n", "integer", true, None),
        ];
        assert_eq!(
            differences(&shape(), &columns, &[], &[])[..2],
            [
                "column \"id\" is character varying(10), not text",
                "column \"n\" is integer, not bigint",
            ]
        );
    }
}
