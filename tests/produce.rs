//! `meshguard produce` against real Kafka and MariaDB: events land keyed by record id, and the
//! valid ones' source rows are in the database, a share of them deliberately mismatched.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use common::*;
use rust_decimal::Decimal;
use sqlx::Row;

/// One connection to the MariaDB the generator writes source rows to.
async fn source_db(url: &str) -> sqlx::MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {url} does not answer ({e}): {START_HINT}"))
}

/// `meshguard produce --mysql` to a new topic (`name`, `partitions`) with `args`, seeded with
/// this process's id + `seed_offset`; the source database, the products folder and the topic.
async fn produce_with_source_rows(name: &str, partitions: i32, seed_offset: u32, args: &[&str]) -> (sqlx::MySqlPool, Products, String) {
    let kafka = kafka();
    let url = mysql();
    let pool = source_db(&url).await;
    let topic = unique(name);
    create_topics(&kafka, &[&topic], partitions).await;
    let products = Products::payments(&[&topic]);
    let seed = (std::process::id() + seed_offset).to_string();
    let mut all = args.to_vec();
    all.extend(["--seed", &seed, "--mysql", &url]);
    produce_cli(&kafka, products.dir.path(), &topic, &all);
    (pool, products, topic)
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_writes_events_and_their_source_rows() {
    let kafka = kafka();
    let args = ["--count", "400", "--invalid-ratio", "0.1", "--mismatch-ratio", "0.25"];
    let (pool, products, topic) = produce_with_source_rows("pay-produce", 2, 0, &args).await;

    let records = read_all(&kafka, &topic, 400, Duration::from_secs(30));
    assert_eq!(records.len(), 400);
    let catalog = meshguard::product::Catalog::load(&meshguard::product::Files::Disk {
        products: products.dir.path().to_path_buf(),
        schemas: repo().join("schemas"),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let contract = catalog.binding(&topic).map(|b| b.contract.clone()).unwrap_or_else(|| panic!("binding"));
    let mut valid: HashMap<String, Decimal> = HashMap::new();
    let mut invalid_keys = Vec::new();
    for r in &records {
        let eval = meshguard::verdict::evaluate(&contract, r.payload.as_deref().unwrap_or_default(), time::OffsetDateTime::now_utc());
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        match (eval.is_valid(), eval.record) {
            (true, Some(rec)) => {
                assert_eq!(eval.record_id.as_deref(), Some(key.as_str()), "events are keyed by record id");
                let amount = Decimal::from_str(&rec["amount"].to_string()).unwrap_or_else(|e| panic!("{e}"));
                let _ = valid.insert(key, amount);
            }
            _ => invalid_keys.push(key),
        }
    }
    assert!(valid.len() > 300 && !invalid_keys.is_empty());

    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT payment_id, amount FROM payments WHERE payment_id IN (");
    let mut sep = q.separated(", ");
    for id in valid.keys().chain(invalid_keys.iter()) {
        let _ = sep.push_bind(id.clone());
    }
    let _ = q.push(")");
    let rows = q.build().fetch_all(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    let source: HashMap<String, Decimal> = rows.iter().map(|r| (r.get::<String, _>(0), r.get::<Decimal, _>(1))).collect();
    assert_eq!(source.len(), valid.len(), "one source row per valid event, none for invalid ones");
    let mismatched = valid.iter().filter(|(id, amount)| source.get(*id) != Some(*amount)).count();
    let share = mismatched as f64 / valid.len() as f64;
    assert!((0.15..0.35).contains(&share), "about a quarter of the rows differ: {mismatched} of {}", valid.len());
}

/// `--bad-row-ratio`: exactly that share of the source rows breaks the contract at rest (a
/// status outside its enum), for `meshguard scan` to find; the events stay valid.
#[tokio::test(flavor = "multi_thread")]
async fn bad_rows_on_demand_break_the_contract_at_rest() {
    let kafka = kafka();
    let args = ["--count", "100", "--invalid-ratio", "0", "--bad-row-ratio", "0.1"];
    let (pool, _products, topic) = produce_with_source_rows("pay-bad-rows", 1, 2, &args).await;
    let records = read_all(&kafka, &topic, 100, Duration::from_secs(30));
    let mut q =
        sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT CAST(SUM(status = 'LOST') AS SIGNED), COUNT(*) FROM payments WHERE payment_id IN (");
    let mut sep = q.separated(", ");
    for r in &records {
        let _ = sep.push_bind(String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned());
    }
    let _ = q.push(")");
    let row = q.build().fetch_one(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    let (bad, all): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((bad, all), (10, 100), "a tenth of the 100 rows is bad");
    let contract_statuses = std::fs::read_to_string(repo().join("schemas/payment-schema.json")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!contract_statuses.contains("\"LOST\""), "the bad status is outside the contract's enum");
}

/// Reconciliation relies on this: a valid event's source row is in the database before the
/// event can be read from Kafka. Each record is looked up right after it is read, while the
/// producer is still sending at a fixed rate.
#[tokio::test(flavor = "multi_thread")]
async fn source_rows_are_written_before_their_events_are_readable() {
    let kafka = kafka();
    let url = mysql();
    let pool = source_db(&url).await;
    let topic = unique("pay-rows-first");
    create_topics(&kafka, &[&topic], 1).await;
    let products = Products::payments(&[&topic]);
    let consumer = reader(&kafka, &topic);
    let mut producer = Command::new(binary())
        .args(["produce", "--topic", &topic, "--count", "600", "--rate", "300", "--invalid-ratio", "0", "--seed"])
        .arg((std::process::id() + 1).to_string())
        .args(["--mysql", &url])
        .current_dir(repo())
        .env("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS", &kafka)
        .env("MESHGUARD__PRODUCTS__DIR", products.dir.path())
        .env("MESHGUARD__SCHEMAS__DIR", repo().join("schemas"))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut seen, mut absent) = (0, Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen < 600 && std::time::Instant::now() < deadline {
        let Some(Ok(m)) = rdkafka::consumer::BaseConsumer::poll(&consumer, Duration::from_millis(100)) else { continue };
        use rdkafka::Message;
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        seen += 1;
        let found: Option<(String,)> = sqlx::query_as("SELECT payment_id FROM payments WHERE payment_id = ?")
            .bind(&key)
            .fetch_optional(&pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if found.is_none() {
            absent.push(key);
        }
    }
    assert!(producer.wait().unwrap_or_else(|e| panic!("{e}")).success());
    assert_eq!(seen, 600, "every event read back");
    assert!(
        absent.is_empty(),
        "{} events were readable before their source rows existed, e.g. {:?}",
        absent.len(),
        &absent[..absent.len().min(3)]
    );
}

/// `--keys`: the events' record ids come from a pool of that many keys, so records get new
/// versions; each key's source row holds the amount of its last event (the upsert).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_pool_gives_records_versions_and_the_source_row_the_last_amount() {
    let kafka = kafka();
    let args = ["--count", "400", "--keys", "20", "--invalid-ratio", "0"];
    let (pool, _products, topic) = produce_with_source_rows("pay-keys", 2, 17, &args).await;

    // Read in each partition's order; a key's events share a partition, so the last one read
    // for a key is the last one produced.
    let records = read_all(&kafka, &topic, 400, Duration::from_secs(30));
    assert_eq!(records.len(), 400);
    let mut last: HashMap<String, Decimal> = HashMap::new();
    for r in &records {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["payment_id"].as_str(), Some(key.as_str()), "events are keyed by record id");
        let amount = Decimal::from_str(&v["amount"].to_string()).unwrap_or_else(|e| panic!("{e}"));
        let _ = last.insert(key, amount);
    }
    assert_eq!(last.len(), 20, "400 events over a pool of 20 keys reach all 20 and no other");

    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT payment_id, amount FROM payments WHERE payment_id IN (");
    let mut sep = q.separated(", ");
    for id in last.keys() {
        let _ = sep.push_bind(id.clone());
    }
    let _ = q.push(")");
    let rows = q.build().fetch_all(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    let source: HashMap<String, Decimal> = rows.iter().map(|r| (r.get::<String, _>(0), r.get::<Decimal, _>(1))).collect();
    assert_eq!(source, last, "one source row per key, with its last event's amount");
}
