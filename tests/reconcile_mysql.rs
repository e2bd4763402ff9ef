//! The reconciler's MySQL source against the real MariaDB: `IN (…)` lists padded to a few fixed
//! lengths (so prepared statements are reused) still answer exactly the keys asked for, with
//! exact decimals.

mod common;

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use sqlx::Connection;

use common::{mysql, unique};
use meshguard::product::model::ReconciliationSpec;
use meshguard::reconcile::mysql::{MySqlSource, padded_len};
use meshguard::reconcile::{SourceDb, SourceValue};

fn spec(table: &str) -> ReconciliationSpec {
    ReconciliationSpec {
        table: table.to_owned(),
        key_column: "payment_id".into(),
        amount_column: "amount".into(),
        amount_field: "amount".into(),
        currency_column: Some("currency".into()),
        currency_field: Some("currency".into()),
        tolerance: None,
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn padded_lengths_are_the_chunk_or_one_of_its_halvings() {
    assert_eq!(padded_len(1000, 1000), 1000);
    assert_eq!(padded_len(999, 1000), 1000);
    assert_eq!(padded_len(501, 1000), 1000);
    assert_eq!(padded_len(500, 1000), 500);
    assert_eq!(padded_len(126, 1000), 250);
    assert_eq!(padded_len(3, 1000), 15);
    assert_eq!(padded_len(1, 4), 4);
    assert_eq!(padded_len(1200, 1000), 1200, "a longer list is sent as it is");
    let lengths: std::collections::BTreeSet<usize> = (1..=1000).map(|n| padded_len(n, 1000)).collect();
    assert_eq!(lengths.into_iter().collect::<Vec<_>>(), vec![15, 31, 62, 125, 250, 500, 1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_in_lists_return_exactly_the_rows_asked_for_with_exact_decimals() {
    let url = mysql();
    let table = unique("reconcile").replace('-', "_");
    let mut conn = sqlx::mysql::MySqlConnection::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let create = format!(
        "CREATE TABLE {table} (payment_id CHAR(36) NOT NULL PRIMARY KEY, amount DECIMAL(18,2) NOT NULL, currency CHAR(3) NOT NULL)"
    );
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.unwrap_or_else(|e| panic!("{e}"));
    // Amounts a float would not hold exactly, and the column's extremes.
    let amounts = ["0.10", "0.20", "19.99", "-0.01", "9999999999999999.99", "-9999999999999999.99", "1234567.89"];
    let mut rows: HashMap<String, SourceValue> = HashMap::new();
    for i in 0..100 {
        let key = format!("key-{i:03}");
        let value = SourceValue { amount: dec(amounts[i % amounts.len()]), currency: Some(if i % 2 == 0 { "EUR" } else { "USD" }.into()) };
        let insert = format!("INSERT INTO {table} (payment_id, amount, currency) VALUES (?, ?, ?)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(&key)
            .bind(value.amount)
            .bind(value.currency.as_deref())
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = rows.insert(key, value);
    }
    let source = MySqlSource::lazy(&url, 2, 64).unwrap_or_else(|e| panic!("{e}"));
    let spec = spec(&table);
    // Lengths that are padded (1 → 8, 3 → 8, 33 → 64), exact (8, 64), and longer than the
    // chunk (sent as is); absent keys among present ones.
    for n in [1_usize, 3, 8, 33, 64, 90] {
        let mut keys: Vec<String> = (0..n).map(|i| if i % 5 == 4 { format!("absent-{i:03}") } else { format!("key-{i:03}") }).collect();
        keys.sort_unstable();
        let found = source.fetch(&spec, &keys).await.unwrap_or_else(|e| panic!("{n} keys: {e}"));
        let expected: HashMap<String, SourceValue> = keys.iter().filter_map(|k| rows.get(k).map(|v| (k.clone(), v.clone()))).collect();
        assert_eq!(found, expected, "{n} keys");
        for (key, value) in &found {
            assert_eq!(value.amount.to_string(), rows[key].amount.to_string(), "{key}: the decimal's text, scale included");
        }
    }
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(&mut conn).await;
}
