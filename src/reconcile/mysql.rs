//! The MySQL/MariaDB source: one `SELECT key, amount[, currency] FROM table WHERE key IN (…)`
//! per call, identifiers from checked configuration, every value a bound parameter.

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row};

use super::{SourceDb, SourceValue};
use crate::error::{Error, Secrets, System, redact_uri as redact};
use crate::product::catalog::is_sql_identifier;
use crate::product::model::ReconciliationSpec;

/// A pool of connections to the source database.
#[derive(Debug, Clone)]
pub struct MySqlSource {
    pool: MySqlPool,
    /// The longest `IN (…)` list (`reconcile.chunk`). Shorter lists are padded to it or to one
    /// of its halvings, so each connection prepares a handful of statements per table and
    /// reuses them: sqlx caches prepared statements by their text, and every list length is
    /// another text (another prepare round trip, and cache churn at low load).
    chunk: usize,
}

impl MySqlSource {
    /// A lazily connecting pool: meshguard starts even when the database is down (claims wait).
    pub fn lazy(url: &str, connections: u32, chunk: usize) -> Result<Self, Error> {
        let pool = MySqlPoolOptions::new()
            .max_connections(connections.max(1))
            // Every connection is used by every round: keep them (and their prepared
            // statements) instead of closing idle ones after sqlx's 10 minutes.
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)
            .map_err(|e| Error::refused(System::MySql, format_args!("mysql.url {}: {}", redact(url), scrub(&e.to_string(), url))))?;
        Ok(Self { pool, chunk: chunk.max(1) })
    }
}

/// The length of the `IN (…)` list that `n` keys are sent as: the smallest of `chunk`,
/// `chunk / 2`, `chunk / 4` … (no shorter than 8) that holds them; `n` itself when it exceeds
/// `chunk`.
pub fn padded_len(n: usize, chunk: usize) -> usize {
    if n >= chunk {
        return n;
    }
    let mut size = chunk;
    while size / 2 >= n && size / 2 >= 8 {
        size /= 2;
    }
    size
}

/// Connects once at start-up. Credentials the server refuses, or a TLS handshake that fails
/// (wrong CA, TLS required), end the process with a message naming the problem: retrying would
/// never help. A server that is merely down is not an error here (claims wait for it).
pub async fn check_credentials(url: &str) -> Result<(), Error> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let options = sqlx::mysql::MySqlConnectOptions::from_str(url)
        .map_err(|e| Error::refused(System::MySql, format_args!("mysql.url {}: {}", redact(url), scrub(&e.to_string(), url))))?;
    let attempt = tokio::time::timeout(Duration::from_secs(10), options.connect()).await;
    let error = match attempt {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            return Ok(());
        }
        Ok(Err(e)) => e,
        Err(_) => {
            tracing::warn!(url = %redact(url), "MySQL did not answer within 10s at start-up; reconciliation waits for it");
            return Ok(());
        }
    };
    let what = match &error {
        sqlx::Error::Database(db) => {
            let number = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|m| m.number());
            match number {
                Some(1044 | 1045 | 1698 | 3159) => "MySQL authentication failed",
                _ => "MySQL refused the connection",
            }
        }
        sqlx::Error::Tls(_) => "MySQL TLS handshake failed",
        sqlx::Error::Configuration(_) => "MySQL configuration is invalid",
        other if other.to_string().to_ascii_lowercase().contains("certificate") => "MySQL TLS handshake failed",
        _ => {
            tracing::warn!(url = %redact(url), error = %scrub(&error.to_string(), url), "MySQL unavailable at start-up; reconciliation waits for it");
            return Ok(());
        }
    };
    Err(Error::refused(System::MySql, format_args!("{what} (mysql.url {}): {}", redact(url), scrub(&error.to_string(), url))))
}

/// A column of the reconciliation query that does not hold what the configuration says (a key
/// that is not text, an amount that is not a decimal): the operator must fix the mapping.
fn column_error(spec: &ReconciliationSpec, e: sqlx::Error) -> Error {
    Error::refused(System::MySql, format_args!("{}: {e}", spec.table))
}

/// Removes the URL's password from a message, should a library ever echo it.
fn scrub(message: &str, url: &str) -> String {
    Secrets::of(url).scrub(message)
}

impl SourceDb for MySqlSource {
    async fn fetch(&self, spec: &ReconciliationSpec, keys: &[String]) -> Result<HashMap<String, SourceValue>, Error> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        // The catalog checked these at load; checked again because SQL is built from them.
        for ident in [&spec.table, &spec.key_column, &spec.amount_column].into_iter().chain(spec.currency_column.as_ref()) {
            if !is_sql_identifier(ident) {
                return Err(Error::refused(System::MySql, format_args!("refusing identifier {ident:?}")));
            }
        }
        let currency = spec.currency_column.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
            "SELECT {}, {}{currency} FROM {} WHERE {} IN (",
            spec.key_column, spec.amount_column, spec.table, spec.key_column
        ));
        let mut list = q.separated(", ");
        for k in keys {
            let _ = list.push_bind(k);
        }
        // Padding repeats the last key: `IN` is a set, so the answer is the same rows.
        if let Some(last) = keys.last() {
            for _ in keys.len()..padded_len(keys.len(), self.chunk) {
                let _ = list.push_bind(last);
            }
        }
        let _ = q.push(")");
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| Error::transient(System::MySql, format_args!("{}: {}", spec.table, redact(&e.to_string()))))?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get(0).map_err(|e| column_error(spec, e))?;
            let amount: Decimal = row.try_get(1).map_err(|e| column_error(spec, e))?;
            let currency: Option<String> =
                if spec.currency_column.is_some() { row.try_get(2).map_err(|e| column_error(spec, e))? } else { None };
            let _ = out.insert(key, SourceValue { amount, currency });
        }
        Ok(out)
    }
}
