//! `meshguard scan` against the real MariaDB and FerretDB: a table and a collection seeded with
//! known good and bad rows, each violation reported with its key; decimals as stored; the
//! configuration errors (unknown table or collection, missing column, unreachable server) as
//! one line and exit 2. Every test uses a database of its own.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use bson::{Bson, doc};
use serde_json::Value;
use sqlx::Connection;

use common::{binary, mongodb, mysql, repo, unique, url_of};

const NOW: &str = "2026-12-01T12:00:10Z";

fn key(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A database name no other run uses.
fn database() -> String {
    unique("scan").replace('-', "_")
}

/// A product of one payments contract bound by `source` (YAML flow mapping, or none).
fn product(dir: &Path, sources: &str, contract: &str, schema: &str, source: Option<&str>) {
    let products = dir.join("products");
    std::fs::create_dir_all(&products).unwrap_or_else(|e| panic!("{e}"));
    let binding = source.map(|s| format!("      source: {s}\n")).unwrap_or_default();
    let yaml = format!(
        "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: scan-test\n  domain: scantest\n  version: \"1.0.0\"\n  owner: t@example.com\nspec:\n  sources:\n{sources}  contracts:\n    - name: {contract}\n      version: \"1.0.0\"\n      schema: schemas/{schema}\n      quality:\n        freshness: 1s\n        completeness: 100%\n        accuracy: 99.9%\n{binding}"
    );
    std::fs::write(products.join("scan-test.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
}

fn scan(dir: &Path, mysql_url: &str, mongo_uri: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("scan")
        .args(args)
        .args(["--now", NOW])
        .env("MESHGUARD__PRODUCTS__DIR", dir.join("products"))
        .env("MESHGUARD__SCHEMAS__DIR", repo().join("schemas"))
        .env("MESHGUARD__MYSQL__URL", mysql_url)
        .env("MESHGUARD__MONGODB__URI", mongo_uri)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn report(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let reports: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text} / {}", String::from_utf8_lossy(&out.stderr)));
    reports.get(0).cloned().unwrap_or_else(|| panic!("no report: {text}"))
}

/// `(path, keyword)` → the keys listed.
fn violations(report: &Value) -> Vec<(String, String, Vec<String>)> {
    let groups = report["violations"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<(String, String, Vec<String>)> = groups
        .iter()
        .map(|g| {
            let keys =
                g["lines"].as_array().map(|l| l.iter().filter_map(|a| a["key"].as_str().map(str::to_owned)).collect()).unwrap_or_default();
            (g["path"].as_str().unwrap_or_default().to_owned(), g["keyword"].as_str().unwrap_or_default().to_owned(), keys)
        })
        .collect();
    out.sort();
    out
}

async fn mysql_database(db: &str, statements: &[String]) {
    let mut conn = sqlx::mysql::MySqlConnection::connect(&mysql()).await.unwrap_or_else(|e| panic!("{}: {e}", mysql()));
    let mut all = vec![format!("CREATE DATABASE {db}"), format!("USE {db}"), "SET SESSION sql_mode = ''".to_owned()];
    all.extend_from_slice(statements);
    for s in all {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone())).execute(&mut conn).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

async fn drop_mysql(db: &str) {
    if let Ok(mut conn) = sqlx::mysql::MySqlConnection::connect(&mysql()).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}"))).execute(&mut conn).await;
    }
}

const PAY_TABLE: &str = "CREATE TABLE pay (payment_id CHAR(36) NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, \
     amount DECIMAL(20,3) NULL, currency CHAR(3) NULL, status VARCHAR(16) NOT NULL, created_at DATETIME(6) NULL, \
     updated_at DATETIME(6) NULL, internal_note BLOB NULL)";

fn pay_rows() -> Vec<String> {
    let rows = [
        // Good: amounts a float does not hold exactly, the column's extreme, no update yet.
        (1, "1", "'19.990'", "'EUR'", "COMPLETED", "'2026-12-01 12:00:00.250000'", "NULL"),
        (2, "2", "'0.290'", "'USD'", "PENDING", "'2026-12-01 11:59:00'", "'2026-12-01 12:00:05.500000'"),
        (3, "3", "'99999999999999999.990'", "'EUR'", "PROCESSING", "'2026-12-01 11:00:00'", "NULL"),
        // Bad: below the minimum, not a multiple of 0.01.
        (4, "4", "'-0.010'", "'EUR'", "FAILED", "'2026-12-01 11:00:00'", "NULL"),
        (5, "5", "'10.015'", "'EUR'", "FAILED", "'2026-12-01 11:00:00'", "NULL"),
        // Bad: NULL in required columns.
        (6, "6", "NULL", "'EUR'", "PENDING", "'2026-12-01 11:00:00'", "NULL"),
        (7, "7", "'1.00'", "NULL", "PENDING", "'2026-12-01 11:00:00'", "NULL"),
        // Bad: a zero date, a status outside the enum, a customer id below 1.
        (8, "8", "'1.00'", "'EUR'", "PENDING", "'0000-00-00 00:00:00'", "NULL"),
        (9, "9", "'1.00'", "'EUR'", "LOST", "'2026-12-01 11:00:00'", "NULL"),
        (10, "0", "'1.00'", "'eur'", "PENDING", "'2026-12-01 11:00:00'", "NULL"),
    ];
    rows.iter()
        .map(|(n, c, a, cur, s, t, u)| {
            format!(
                "INSERT INTO pay (payment_id, customer_id, amount, currency, status, created_at, updated_at, internal_note) \
                 VALUES ('{}', {c}, {a}, {cur}, '{s}', {t}, {u}, x'00ff')",
                key(*n)
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_good_and_bad_rows_reports_each_violation_with_its_key() {
    let db = database();
    let mut statements = vec![PAY_TABLE.to_owned()];
    statements.extend(pay_rows());
    mysql_database(&db, &statements).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sources = format!("    mysql:\n      database: {db}\n      tables: [pay]\n");
    product(dir.path(), &sources, "payment-schema", "payment-schema.json", Some("{mysql: {table: pay, keyColumn: payment_id}}"));
    let url = url_of(&db);

    let out = scan(dir.path(), &url, &mongodb(), &["--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let r = report(&out);
    assert_eq!((r["records"].as_u64(), r["valid"].as_u64(), r["invalid"].as_u64()), (Some(10), Some(3), Some(7)), "{r:#}");
    let k = |n: u32| vec![key(n)];
    assert_eq!(
        violations(&r),
        vec![
            ("/amount".into(), "minimum".into(), k(4)),
            ("/amount".into(), "multipleOf".into(), k(5)),
            ("/amount".into(), "type".into(), k(6)),
            ("/created_at".into(), "format".into(), k(8)),
            ("/currency".into(), "pattern".into(), k(10)),
            ("/currency".into(), "type".into(), k(7)),
            ("/customer_id".into(), "minimum".into(), k(10)),
            ("/status".into(), "enum".into(), k(9)),
        ],
        "{r:#}"
    );
    // The newest event time is row 2's update; the zero date counts as none.
    let source = &r["source"];
    assert_eq!(source["source"], "mysql table pay");
    assert_eq!(source["newest_event_time"], "2026-12-01T12:00:05.5Z", "{source:#}");
    assert_eq!(source["freshness_seconds"].as_f64(), Some(4.5));
    assert_eq!(source["meets_freshness_sla"], false);

    // The same report in pages of 3 (keyset pagination reads every row once).
    let paged = scan(dir.path(), &url, &mongodb(), &["--format", "json", "--page-size", "3"]);
    let p = report(&paged);
    assert_eq!(violations(&p), violations(&r));
    assert_eq!((p["records"].as_u64(), p["source"]["pages"].as_u64()), (Some(10), Some(4)));

    // The text report lists keys, and the source's freshness.
    let text = scan(dir.path(), &url, &mongodb(), &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(1));
    assert!(stdout.contains(&format!("keys {}", key(4))), "{stdout}");
    assert!(stdout.contains("source        newest event 2026-12-01T12:00:05.5Z, 4.5s old (SLA 1s: BREACHED)"), "{stdout}");
    assert!(stdout.contains("FAIL: 7 of 10 records break the contract"), "{stdout}");
    drop_mysql(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_200k_rows_is_read_to_its_last_row_once() {
    let db = database();
    // MariaDB's sequence engine makes the rows; the last one breaks the contract.
    mysql_database(
        &db,
        &[
            "CREATE TABLE payments (payment_id CHAR(36) NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, \
             amount DECIMAL(18,2) NOT NULL, currency CHAR(3) NOT NULL, status VARCHAR(16) NOT NULL, \
             created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NULL)"
                .to_owned(),
            "INSERT INTO payments SELECT CONCAT('00000000-0000-4000-8000-', LPAD(seq, 12, '0')), 1 + seq % 5000, \
             (seq % 100000) / 100, 'EUR', IF(seq = 200000, 'LOST', 'COMPLETED'), \
             TIMESTAMPADD(SECOND, -seq, '2026-12-01 12:00:00'), NULL FROM seq_1_to_200000"
                .to_owned(),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sources = format!("    mysql:\n      database: {db}\n      tables: [payments]\n");
    product(dir.path(), &sources, "payment-schema", "payment-schema.json", Some("{mysql: {table: payments}}"));
    let out = scan(dir.path(), &url_of(&db), &mongodb(), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    assert_eq!((r["records"].as_u64(), r["invalid"].as_u64(), r["source"]["pages"].as_u64()), (Some(200_000), Some(1), Some(200)));
    assert_eq!(violations(&r), vec![("/status".into(), "enum".into(), vec![key(200_000)])]);
    assert_eq!(r["source"]["newest_event_time"], "2026-12-01T11:59:59Z");
    drop_mysql(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_table_a_missing_column_and_an_unreachable_server_are_one_line_and_exit_2() {
    let db = database();
    mysql_database(
        &db,
        &["CREATE TABLE nostatus (payment_id CHAR(36) NOT NULL PRIMARY KEY, customer_id BIGINT, amount DECIMAL(18,2), \
           currency CHAR(3), created_at DATETIME(6))"
            .to_owned()],
    )
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = url_of(&db);
    let one_line = |out: &Output, needles: &[&str]| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} in {err}");
        }
    };
    let sources = format!("    mysql:\n      database: {db}\n      tables: [nosuch, nostatus]\n");

    product(dir.path(), &sources, "payment-schema", "payment-schema.json", Some("{mysql: {table: nosuch}}"));
    one_line(&scan(dir.path(), &url, &mongodb(), &[]), &["table", "nosuch", "does not exist"]);

    product(dir.path(), &sources, "payment-schema", "payment-schema.json", Some("{mysql: {table: nostatus}}"));
    one_line(&scan(dir.path(), &url, &mongodb(), &[]), &["nostatus", "has no column status"]);

    one_line(&scan(dir.path(), "mysql://root@127.0.0.1:1/banking", &mongodb(), &[]), &["cannot reach MySQL", "127.0.0.1:1"]);

    let sources = format!("    mongodb:\n      database: {db}\n      collections: [payment_analytics]\n");
    product(dir.path(), &sources, "payment-analytics-schema", "payment-analytics-schema.json", None);
    one_line(&scan(dir.path(), &url, &mongodb(), &[]), &["collection", "payment_analytics", "does not exist"]);
    one_line(&scan(dir.path(), &url, "mongodb://127.0.0.1:1", &[]), &["cannot reach MongoDB", "127.0.0.1:1"]);
    drop_mysql(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_of_good_and_bad_documents_reports_each_violation_with_its_key() {
    let db = database();
    let client = mongodb::Client::with_uri_str(mongodb()).await.unwrap_or_else(|e| panic!("{e}"));
    let coll = client.database(&db).collection::<bson::Document>("payment_analytics");
    // FerretDB 1.x stores no Decimal128 (it drops the connection): amounts are doubles here;
    // Decimal128 is written as its digits (unit test in src/scan/mongo.rs).
    let dec = |s: &str| Bson::Double(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")));
    let at = |ms: i64| Bson::DateTime(bson::DateTime::from_millis(ms));
    // 2026-12-01T12:00:00Z
    let t0 = 1_764_590_400_000_i64;
    let good = |n: u32, amount: Bson, processed: Bson| {
        doc! { "payment_id": key(n), "customer_id": 7_i64, "amount": amount, "currency": "EUR", "channel": "ONLINE", "processed_at": processed }
    };
    let mut docs = vec![
        good(1, dec("19.99"), at(t0)),
        good(2, dec("0.29"), Bson::String("2026-12-01T12:00:02Z".into())),
        good(3, Bson::Double(12.5), at(t0 - 60_000)),
    ];
    // Wrong types, out of range, a required field missing, a bad date, null.
    let mut d = good(4, dec("1.00"), at(t0));
    let _ = d.insert("customer_id", "abc");
    docs.push(d);
    docs.push(good(5, dec("-1.00"), at(t0)));
    let mut d = good(6, dec("1.00"), at(t0));
    let _ = d.remove("channel");
    docs.push(d);
    docs.push(good(7, dec("1.00"), Bson::String("yesterday".into())));
    let mut d = good(8, dec("1.00"), at(t0));
    let _ = d.insert("risk_score", 1.5);
    docs.push(d);
    docs.push(good(9, Bson::Null, at(t0)));
    let _ = coll.insert_many(docs).await.unwrap_or_else(|e| panic!("{e}"));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sources = format!("    mongodb:\n      database: {db}\n      collections: [payment_analytics]\n");
    // No `source:`: the collection named after the contract is its default binding.
    product(dir.path(), &sources, "payment-analytics-schema", "payment-analytics-schema.json", None);
    let out = scan(dir.path(), &mysql(), &mongodb(), &["--format", "json", "--page-size", "4"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let r = report(&out);
    assert_eq!((r["records"].as_u64(), r["valid"].as_u64(), r["invalid"].as_u64()), (Some(9), Some(3), Some(6)), "{r:#}");
    let k = |n: u32| vec![key(n)];
    assert_eq!(
        violations(&r),
        vec![
            ("".into(), "required".into(), k(6)),
            ("/amount".into(), "minimum".into(), k(5)),
            ("/amount".into(), "type".into(), k(9)),
            ("/customer_id".into(), "type".into(), k(4)),
            ("/processed_at".into(), "format".into(), k(7)),
            ("/risk_score".into(), "maximum".into(), k(8)),
        ],
        "{r:#}"
    );
    assert_eq!(r["source"]["newest_event_time"], "2026-12-01T12:00:02Z", "{:#}", r["source"]);
    assert_eq!(r["source"]["pages"].as_u64(), Some(3));
    let _ = client.database(&db).drop().await;
}

#[test]
fn the_shipped_products_bind_their_sources_and_a_misspelled_key_is_refused() {
    use meshguard::product::model::SourceAt;
    let catalog = meshguard::product::Catalog::load(&meshguard::product::Files::Disk {
        products: repo().join("config/products"),
        schemas: repo().join("schemas"),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let bound = |product: &str, contract: &str| {
        catalog.product(product).and_then(|p| p.contract(Some(contract))).and_then(|c| c.source.clone()).map(|b| (b.at, b.key))
    };
    let mysql = |t: &str| SourceAt::Mysql { database: "banking".into(), table: t.into() };
    assert_eq!(bound("payments-data-product", "payment-schema"), Some((mysql("payments"), "payment_id".into())));
    assert_eq!(
        bound("payments-data-product", "payment-analytics-schema"),
        Some((SourceAt::Mongodb { database: "banking".into(), collection: "payment_analytics".into() }, "payment_id".into()))
    );
    assert_eq!(bound("loans-data-product", "loan-schema"), Some((mysql("loans"), "loan_id".into())));
    assert_eq!(bound("loans-data-product", "loan-application-schema"), None, "loans binds one explicitly: no defaults");
    assert_eq!(bound("cards-data-product", "card-transaction"), None, "an Avro contract takes no default");

    // lint reads DIR/products and DIR/../schemas.
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path().join("config");
    std::fs::create_dir_all(tmp.path().join("schemas")).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::copy(repo().join("schemas/payment-schema.json"), tmp.path().join("schemas/payment-schema.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let lint = || Command::new(binary()).args(["lint", "--config"]).arg(&dir).output().unwrap_or_else(|e| panic!("{e}"));
    let sources = "    mysql:\n      database: banking\n      tables: [payments]\n";
    product(&dir, sources, "payment-schema", "payment-schema.json", Some("{mysql: {tabel: payments}}"));
    let out = lint();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("tabel"), "{err}");
    product(&dir, sources, "payment-schema", "payment-schema.json", Some("{mysql: {table: payment}}"));
    let out = lint();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.mysql.table \"payment\" is not one of spec.sources.mysql.tables"), "{err}");
}
