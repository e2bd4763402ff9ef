//! The MySQL/MariaDB source: one `SELECT key, amount[, currency] FROM table WHERE key IN (…)`
//! per call, identifiers from checked configuration, every value a bound parameter.

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row};

use super::{SourceDb, SourceValue};
use crate::product::catalog::is_sql_identifier;
use crate::product::model::ReconciliationSpec;
use crate::reconcile::source_rows::redact;

/// A pool of connections to the source database.
#[derive(Debug, Clone)]
pub struct MySqlSource {
    pool: MySqlPool,
}

impl MySqlSource {
    /// A lazily connecting pool: meshguard starts even when the database is down (claims wait).
    pub fn lazy(url: &str) -> Result<Self, String> {
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)
            .map_err(|e| format!("mysql.url {}: {e}", redact(url)))?;
        Ok(Self { pool })
    }
}

impl SourceDb for MySqlSource {
    async fn fetch(&self, spec: &ReconciliationSpec, keys: &[String]) -> Result<HashMap<String, SourceValue>, String> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        // The catalog checked these at load; checked again because SQL is built from them.
        for ident in [&spec.table, &spec.key_column, &spec.amount_column].into_iter().chain(spec.currency_column.as_ref()) {
            if !is_sql_identifier(ident) {
                return Err(format!("refusing identifier {ident:?}"));
            }
        }
        let currency = spec.currency_column.as_deref().map(|c| format!(", {c}")).unwrap_or_default();
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("SELECT {}, {}{currency} FROM {} WHERE {} IN (", spec.key_column, spec.amount_column, spec.table, spec.key_column));
        let mut list = q.separated(", ");
        for k in keys {
            let _ = list.push_bind(k);
        }
        let _ = q.push(")");
        let rows = q.build().fetch_all(&self.pool).await.map_err(|e| format!("{}: {e}", spec.table))?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let key: String = row.try_get(0).map_err(|e| e.to_string())?;
            let amount: Decimal = row.try_get(1).map_err(|e| e.to_string())?;
            let currency: Option<String> = if spec.currency_column.is_some() { row.try_get(2).map_err(|e| e.to_string())? } else { None };
            let _ = out.insert(key, SourceValue { amount, currency });
        }
        Ok(out)
    }
}
