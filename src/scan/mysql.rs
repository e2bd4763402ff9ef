//! A bound MySQL/MariaDB table, read in pages by its unique key:
//! `SELECT … FROM t WHERE key > ? ORDER BY key LIMIT n`. Every column is read as the text the
//! server prints (`CAST(c AS CHAR)`), so a DECIMAL keeps every digit and a zero date stays
//! what it is, and written into the record by the column's type: numbers as JSON numbers,
//! DATETIME/TIMESTAMP as RFC 3339 UTC, the rest as strings. Identifiers come from the checked
//! binding and the table's own column list; values are bound parameters.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row as _};

use super::{Row, is_json_number, parse_sql_datetime, push_name, push_string, rfc3339};
use crate::contract::Contract;
use crate::error::{Error, Secrets, System, redact_uri};
use crate::product::catalog::is_sql_identifier;
use crate::product::model::SourceBinding;

/// How a column's printed value goes into the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Integers, DECIMAL, FLOAT/DOUBLE, YEAR: the printed number, as it is.
    Number,
    /// DATETIME, TIMESTAMP: RFC 3339 UTC (a value that is no instant stays as printed).
    DateTime,
    /// CHAR, VARCHAR, TEXT, ENUM, SET, DATE, TIME, JSON (MariaDB's is LONGTEXT): a string.
    Text,
}

impl Kind {
    /// The kind of a column by its `information_schema.COLUMNS.DATA_TYPE`; `None` for types a
    /// record cannot hold as JSON (binary, spatial).
    pub fn of(data_type: &str) -> Option<Self> {
        Some(match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal" | "numeric" | "float" | "double" | "real"
            | "year" => Self::Number,
            "datetime" | "timestamp" => Self::DateTime,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" | "date" | "time" | "json" | "uuid"
            | "inet4" | "inet6" => Self::Text,
            _ => return None,
        })
    }
}

/// A column the record is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name (the record's field).
    pub name: String,
    /// How its value is written.
    pub kind: Kind,
    /// Whether a NULL is written as `null` (the contract requires the field, so a NULL is
    /// reported) rather than left out (an optional field that is absent).
    pub null_is_null: bool,
}

/// Writes one row's printed values (`None` = NULL) as a JSON object, in column order; returns
/// the record and the first event-time column's instant.
pub fn render(columns: &[Column], values: &[Option<String>], event_time: &[usize]) -> (Vec<u8>, Option<time::OffsetDateTime>) {
    let mut out = Vec::with_capacity(64 * columns.len());
    out.push(b'{');
    let mut first = true;
    for (column, value) in columns.iter().zip(values) {
        match value {
            None if column.null_is_null => {
                push_name(&mut out, &mut first, &column.name);
                out.extend_from_slice(b"null");
            }
            None => {}
            Some(text) => {
                push_name(&mut out, &mut first, &column.name);
                match column.kind {
                    Kind::Number if is_json_number(text) => out.extend_from_slice(text.as_bytes()),
                    Kind::DateTime => match parse_sql_datetime(text).and_then(rfc3339) {
                        Some(t) => push_string(&mut out, &t),
                        None => push_string(&mut out, text),
                    },
                    _ => push_string(&mut out, text),
                }
            }
        }
    }
    out.push(b'}');
    let time = event_time.iter().find_map(|&i| values.get(i).and_then(Option::as_deref)).and_then(parse_sql_datetime);
    (out, time)
}

/// A checked table and where its next page starts.
#[derive(Debug)]
pub struct TableReader {
    pool: MySqlPool,
    /// The key column (unique, checked) and whether it is an integer (bound as one).
    key: String,
    key_is_integer: bool,
    /// The columns read, the key first (also the record's field when the contract has it).
    columns: Vec<Column>,
    /// Indexes into the record's columns of the event-time columns, in order.
    event_time: Vec<usize>,
    table: String,
    page_size: u32,
    /// The last key read; `None` before the first page.
    after: Option<String>,
    done: bool,
    secrets: Secrets,
    /// Scheduled scans: rows changed since a mark instead of the whole table.
    since: Option<Since>,
}

/// Incremental reading (scheduled scans in `run`): the rows whose event time (the first
/// non-null event-time column, `COALESCE(…)`) is past `mark`, up to `until`, in (event time,
/// key) order: `WHERE t <= until AND (t > at OR (t = at AND key > k)) ORDER BY t, key`.
#[derive(Debug, Clone)]
struct Since {
    /// `COALESCE(updated_at, created_at)` (identifiers from the checked binding).
    expr: String,
    /// The last row read: its event time as the server prints it, and its key.
    mark: Option<(String, String)>,
    /// Rows with a later event time wait for a later scan (they may still be written).
    until: String,
}

fn refused(message: impl std::fmt::Display) -> Error {
    Error::refused(System::MySql, message)
}

/// A connection pool for `mysql.url` (one connection; scheduled scans keep it for every scan).
#[derive(Debug, Clone)]
pub struct Server {
    pool: MySqlPool,
    url: String,
    secrets: Secrets,
}

impl Server {
    /// Connects to `url` (a refusal naming it when the server cannot be reached).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let secrets = Secrets::of(url);
        let scrub = |e: &dyn std::fmt::Display| secrets.scrub(&e.to_string()).replace('\n', " ");
        let options = MySqlConnectOptions::from_str(url)
            .map_err(|e| refused(format_args!("mysql.url {}: {}", redact_uri(url), scrub(&e))))?
            // Printed DATETIME/TIMESTAMP values are UTC.
            .timezone(Some("+00:00".to_owned()));
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| refused(format_args!("cannot reach MySQL at {}: {}", redact_uri(url), scrub(&e))))?;
        Ok(Self { pool, url: url.to_owned(), secrets })
    }
}

impl TableReader {
    /// Connects to `url` (its database) and checks `table` against `contract` and `binding`.
    pub async fn open(url: &str, contract: &Contract, binding: &SourceBinding, table: &str, page_size: u32) -> Result<Self, Error> {
        let server = Server::connect(url).await?;
        Self::on(&server, contract, binding, table, page_size).await
    }

    /// Checks `table` of `server`'s database against `contract` and `binding` (the columns are
    /// read again each time: a scheduled scan sees a column dropped since the last one).
    pub async fn on(server: &Server, contract: &Contract, binding: &SourceBinding, table: &str, page_size: u32) -> Result<Self, Error> {
        let secrets = server.secrets.clone();
        let scrub = |e: &dyn std::fmt::Display| secrets.scrub(&e.to_string()).replace('\n', " ");
        let pool = server.pool.clone();
        let url = server.url.as_str();
        let query_failed = |e: sqlx::Error| refused(format_args!("reading the columns of table {table}: {}", scrub(&e)));
        let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()").fetch_one(&pool).await.map_err(query_failed)?;
        let Some(database) = database else {
            return Err(refused(format_args!("mysql.url {} names no database to find table {table} in", redact_uri(url))));
        };
        let rows = sqlx::query(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .map_err(query_failed)?;
        let mut existing = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(query_failed)?;
            let data_type: String = row.try_get(1).map_err(query_failed)?;
            existing.push((name, data_type));
        }
        if existing.is_empty() {
            return Err(refused(format_args!("table {database}.{table} does not exist (bound by contract {:?})", contract.name)));
        }
        let has = |c: &str| existing.iter().any(|(n, _)| n == c);
        let required: Vec<String> = contract.required.dotted().into_iter().filter(|f| !f.contains('.')).collect();
        let missing: Vec<&String> = required.iter().filter(|f| !has(f)).collect();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return Err(refused(format_args!(
                "table {database}.{table} has no column {}, which contract {:?} requires",
                names.join(", "),
                contract.name
            )));
        }
        let key = binding.key.clone();
        let Some((_, key_type)) = existing.iter().find(|(n, _)| *n == key) else {
            return Err(refused(format_args!("table {database}.{table} has no column {key} (the bound key)")));
        };
        let key_is_integer = matches!(key_type.to_ascii_lowercase().as_str(), "tinyint" | "smallint" | "mediumint" | "int" | "bigint");
        let unique: Option<String> = sqlx::query_scalar(
            "SELECT CAST(INDEX_NAME AS CHAR) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             GROUP BY INDEX_NAME HAVING COUNT(*) = 1 AND MAX(COLUMN_NAME) = ? LIMIT 1",
        )
        .bind(table)
        .bind(&key)
        .fetch_optional(&pool)
        .await
        .map_err(query_failed)?;
        if unique.is_none() {
            return Err(refused(format_args!(
                "key column {key} of table {database}.{table} has no unique index of its own: paging by it could skip rows"
            )));
        }
        if binding.declared
            && let [only] = binding.event_time.as_slice()
            && !has(only)
        {
            return Err(refused(format_args!("table {database}.{table} has no column {only} (the bound event time)")));
        }
        // The record: the contract's properties the table has (every column when the contract
        // names none), then event-time columns it does not name.
        let mut names: Vec<&str> = if binding.fields.is_empty() {
            existing.iter().map(|(n, _)| n.as_str()).collect()
        } else {
            binding.fields.iter().map(String::as_str).filter(|f| has(f)).collect()
        };
        for t in &binding.event_time {
            if has(t) && !names.contains(&t.as_str()) {
                names.push(t);
            }
        }
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let data_type = existing.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str()).unwrap_or_default();
            let Some(kind) = Kind::of(data_type) else {
                return Err(refused(format_args!(
                    "column {name} of table {database}.{table} is {data_type}, which a JSON record cannot hold; leave it out of the contract"
                )));
            };
            if !is_sql_identifier(name) {
                return Err(refused(format_args!("column {name:?} of table {database}.{table} is not a plain SQL identifier")));
            }
            columns.push(Column { name: name.to_owned(), kind, null_is_null: required.iter().any(|r| r == name) || name == key });
        }
        let event_time = binding.event_time.iter().filter_map(|t| columns.iter().position(|c| c.name == *t)).collect();
        Ok(Self {
            pool,
            key,
            key_is_integer,
            columns,
            event_time,
            table: table.to_owned(),
            page_size: page_size.max(1),
            after: None,
            done: false,
            secrets,
            since: None,
        })
    }

    /// Reads only the rows whose event time is after `mark` (the event time as the server
    /// printed it and the key of the last row read before; none: from the first row) and at
    /// most `until` (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC). A table without an event-time column
    /// cannot be read so: the error names it.
    pub fn since(&mut self, mark: Option<(String, String)>, until: String) -> Result<(), Error> {
        let names: Vec<&str> = self.event_time.iter().filter_map(|&i| self.columns.get(i)).map(|c| c.name.as_str()).collect();
        let expr = match names.as_slice() {
            [] => {
                return Err(refused(format_args!(
                    "table {} has no event-time column: a scheduled scan cannot tell which rows changed",
                    self.table
                )));
            }
            [one] => (*one).to_owned(),
            many => format!("COALESCE({})", many.join(", ")),
        };
        self.since = Some(Since { expr, mark, until });
        Ok(())
    }

    /// The mark after the last row read (incremental reading only).
    pub fn mark(&self) -> Option<(String, String)> {
        self.since.as_ref().and_then(|s| s.mark.clone())
    }

    /// The newest event time of the whole table as the server prints it (`MAX` of the
    /// event-time expression), `None` for an empty table or one without event-time columns.
    pub async fn newest(&self) -> Result<Option<String>, Error> {
        let Some(since) = &self.since else { return Ok(None) };
        let q = format!("SELECT CAST(MAX({}) AS CHAR) FROM {}", since.expr, self.table);
        sqlx::query_scalar::<_, Option<String>>(sqlx::AssertSqlSafe(q)).fetch_one(&self.pool).await.map_err(|e| self.read_failed(&e))
    }

    /// Binds a key value as the key column's type: integers as integers, the rest as text.
    fn push_key(&self, q: &mut QueryBuilder<MySql>, key: &str) {
        match key.parse::<i64>() {
            Ok(n) if self.key_is_integer => q.push_bind(n),
            _ => q.push_bind(key.to_owned()),
        };
    }

    /// A failed read of the table, as a retryable error without secrets.
    fn read_failed(&self, e: &sqlx::Error) -> Error {
        Error::transient(
            System::MySql,
            format_args!("reading table {}: {}", self.table, self.secrets.scrub(&e.to_string()).replace('\n', " ")),
        )
    }

    /// The next page in key order.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Row>>, Error> {
        if self.done {
            return Ok(None);
        }
        // Identifiers: the checked key and the table's own column names.
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!("SELECT CAST({} AS CHAR)", self.key));
        for c in &self.columns {
            let _ = q.push(format!(", CAST({} AS CHAR)", c.name));
        }
        if let Some(since) = &self.since {
            let _ = q.push(format!(", CAST({} AS CHAR) FROM {} WHERE {} <= ", since.expr, self.table, since.expr));
            let _ = q.push_bind(since.until.clone());
            if let Some((at, key)) = &since.mark {
                let _ = q.push(format!(" AND ({e} > ", e = since.expr)).push_bind(at.clone());
                let _ = q.push(format!(" OR ({e} = ", e = since.expr)).push_bind(at.clone());
                let _ = q.push(format!(" AND {} > ", self.key));
                self.push_key(&mut q, key);
                let _ = q.push("))");
            }
            let _ = q.push(format!(" ORDER BY {}, {} LIMIT ", since.expr, self.key)).push_bind(self.page_size);
        } else {
            let _ = q.push(format!(" FROM {}", self.table));
            if let Some(after) = &self.after {
                let _ = q.push(format!(" WHERE {} > ", self.key));
                self.push_key(&mut q, after);
            }
            let _ = q.push(format!(" ORDER BY {} LIMIT ", self.key)).push_bind(self.page_size);
        }
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| self.read_failed(&e))?;
        if rows.len() < self.page_size as usize {
            self.done = true;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut page = Vec::with_capacity(rows.len());
        let mut values: Vec<Option<String>> = Vec::with_capacity(self.columns.len());
        for row in rows {
            let key: Option<String> =
                row.try_get(0).map_err(|e| refused(format_args!("table {}: key column {}: {e}", self.table, self.key)))?;
            let Some(key) = key else {
                return Err(refused(format_args!("table {}: key column {} holds NULL", self.table, self.key)));
            };
            values.clear();
            for (i, c) in self.columns.iter().enumerate() {
                let v: Option<String> =
                    row.try_get(i + 1).map_err(|e| refused(format_args!("table {}: column {}: {e}", self.table, c.name)))?;
                values.push(v);
            }
            let (json, event_time) = render(&self.columns, &values, &self.event_time);
            if let Some(since) = &mut self.since {
                let at: Option<String> = row
                    .try_get(self.columns.len() + 1)
                    .map_err(|e| refused(format_args!("table {}: event time {}: {e}", self.table, since.expr)))?;
                if let Some(at) = at {
                    since.mark = Some((at, key.clone()));
                }
            }
            self.after = Some(key.clone());
            page.push(Row { key, json, event_time });
        }
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: Kind, null_is_null: bool) -> Column {
        Column { name: name.into(), kind, null_is_null }
    }

    #[test]
    fn rows_become_records_with_exact_values() {
        let columns = [
            col("payment_id", Kind::Text, true),
            col("amount", Kind::Number, true),
            col("created_at", Kind::DateTime, true),
            col("updated_at", Kind::DateTime, false),
            col("note", Kind::Text, false),
        ];
        let values = [
            Some("a\"b".to_owned()),
            Some("9999999999999999.99".to_owned()),
            Some("2026-12-03 20:19:34.120000".to_owned()),
            None,
            Some("x".to_owned()),
        ];
        let (json, t) = render(&columns, &values, &[3, 2]);
        assert_eq!(
            String::from_utf8_lossy(&json),
            r#"{"payment_id":"a\"b","amount":9999999999999999.99,"created_at":"2026-12-03T20:19:34.12Z","note":"x"}"#
        );
        assert_eq!(t.and_then(rfc3339).as_deref(), Some("2026-12-03T20:19:34.12Z"));
    }

    #[test]
    fn nulls_of_required_fields_and_bad_dates_stay_visible() {
        let columns = [col("amount", Kind::Number, true), col("created_at", Kind::DateTime, true)];
        let (json, t) = render(&columns, &[None, Some("0000-00-00 00:00:00".into())], &[1]);
        assert_eq!(String::from_utf8_lossy(&json), r#"{"amount":null,"created_at":"0000-00-00 00:00:00"}"#);
        assert_eq!(t, None);
    }
}
