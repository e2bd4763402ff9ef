//! Writes generated source rows to MySQL/MariaDB: one multi-row upsert per batch, identifiers
//! from the checked contract configuration, values always bound.

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder};

use crate::contract::Contract;
use crate::error::{Error, System, redact_uri as redact};
use crate::generate::SourceRow;
use crate::product::model::ReconciliationSpec;

/// Writes rows to the contract's reconciliation table.
#[derive(Debug)]
pub struct SourceWriter {
    pool: MySqlPool,
    spec: ReconciliationSpec,
}

impl SourceWriter {
    /// Connects; the contract must declare (or default to) a reconciliation table.
    pub async fn connect(url: &str, contract: &Contract) -> Result<Self, Error> {
        let spec = contract.reconciliation.clone().ok_or_else(|| {
            Error::refused(System::MySql, format_args!("contract {:?} has no reconciliation table to write source rows to", contract.name))
        })?;
        let pool =
            MySqlPoolOptions::new().max_connections(2).acquire_timeout(std::time::Duration::from_secs(10)).connect(url).await.map_err(
                |e| Error::transient(System::MySql, format_args!("cannot connect to {}: {}", redact(url), redact(&e.to_string()))),
            )?;
        Ok(Self { pool, spec })
    }

    /// Upserts `rows` in one statement.
    pub async fn write(&self, rows: &[SourceRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let s = &self.spec;
        // Identifiers were checked to be plain SQL identifiers when the catalog loaded.
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("INSERT INTO {} ({}, customer_id, {}", s.table, s.key_column, s.amount_column));
        if let Some(c) = &s.currency_column {
            let _ = q.push(format!(", {c}"));
        }
        let _ = q.push(", status, created_at) ");
        let _ = q.push_values(rows, |mut b, row| {
            let _ = b.push_bind(&row.id).push_bind(row.customer_id).push_bind(row.amount);
            if s.currency_column.is_some() {
                let _ = b.push_bind(&row.currency);
            }
            let _ = b.push_bind(&row.status).push_bind(time::PrimitiveDateTime::new(row.created_at.date(), row.created_at.time()));
        });
        let _ = q.push(format!(" ON DUPLICATE KEY UPDATE {a} = VALUES({a})", a = s.amount_column));
        let _ = q
            .build()
            .execute(&self.pool)
            .await
            .map_err(|e| Error::transient(System::MySql, format_args!("writing source rows to {}: {e}", s.table)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("mysql://root:s3cret@db:3306/banking"), "mysql://root:***@db:3306/banking");
        assert_eq!(redact("mysql://root@db:3306/banking"), "mysql://root@db:3306/banking");
    }
}
