//! Scheduled scans in `run` (`scan.interval_ms`) against the real Kafka, MariaDB and
//! MongoDB-wire servers, with two instances of the group, for a bound MySQL table and a bound
//! MongoDB collection alike: a missing table or collection is a metric and a retry, never a
//! crash; every changed row is read once per change by the group (not once per instance); bad
//! rows fire a validity alert that resolves once they are fixed; a source that stops changing
//! breaches its freshness SLA; a killed owner's successor counts nothing twice.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use mongodb::bson::{Bson, doc};
use sqlx::Connection;

/// Where the product's payments rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rest {
    /// Table `pay` of a MariaDB database (event time `COALESCE(updated_at, created_at)`).
    Table,
    /// Collection `payment_analytics` of a MongoDB database (event time `updated_at`, a date).
    Collection,
}

impl Rest {
    fn label(self) -> &'static str {
        match self {
            Self::Table => "mysql:pay",
            Self::Collection => "mongodb:payment_analytics",
        }
    }
}

/// A product whose contract reads `topic` and rests in `rest` of database `db`.
fn product(dir: &Path, rest: Rest, db: &str, topic: &str) {
    let (sources, contract, source) = match rest {
        Rest::Table => {
            (format!("mysql:\n      database: {db}\n      tables: [pay]"), "payment-schema", "{mysql: {table: pay, keyColumn: payment_id}}")
        }
        Rest::Collection => (
            format!("mongodb:\n      database: {db}\n      collections: [payment_analytics]"),
            "payment-analytics-schema",
            "{mongodb: {collection: payment_analytics, keyField: payment_id, eventTimeField: updated_at}}",
        ),
    };
    let yaml = format!(
        "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: sched-test\n  domain: schedtest\n  version: \"1.0.0\"\n  owner: t@example.com\nspec:\n  sources:\n    {sources}\n  contracts:\n    - name: {contract}\n      version: \"1.0.0\"\n      schema: schemas/{contract}.json\n      quality:\n        freshness: 3s\n        completeness: 100%\n        accuracy: 99.9%\n      topics:\n        - {topic}\n      source: {source}\n  apis:\n    kafka:\n      topics:\n        - {topic}\n"
    );
    std::fs::write(dir.join("sched-test.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
}

async fn sql(url: &str, statements: &[String]) {
    let mut conn = sqlx::mysql::MySqlConnection::connect(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    for s in statements {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone())).execute(&mut conn).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

fn key(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

const TABLE: &str = "CREATE TABLE pay (payment_id CHAR(36) NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, \
     amount DECIMAL(20,3) NULL, currency CHAR(3) NULL, status VARCHAR(16) NOT NULL, created_at DATETIME(6) NULL, \
     updated_at DATETIME(6) NULL)";

async fn collection(db: &str) -> mongodb::Collection<bson::Document> {
    let client = mongodb::Client::with_uri_str(mongodb()).await.unwrap_or_else(|e| panic!("MongoDB: {e}"));
    client.database(db).collection("payment_analytics")
}

fn now_bson() -> Bson {
    Bson::DateTime(bson::DateTime::now())
}

fn env(names: &Names, db: &str, tag: &str) -> Vec<(String, String)> {
    vec![
        ("MESHGUARD__SCAN__INTERVAL_MS".into(), "300".into()),
        ("MESHGUARD__QUALITY__SCOPE".into(), "group".into()),
        ("MESHGUARD__QUALITY__WINDOW_MS".into(), "1000".into()),
        ("MESHGUARD__QUALITY__LATENESS_MS".into(), "1000".into()),
        ("MESHGUARD__QUALITY__ALERT_RESOLVE_AFTER".into(), "1".into()),
        ("MESHGUARD__QUALITY__SILENCE_AFTER_MS".into(), "600000".into()),
        ("MESHGUARD__MYSQL__ENABLED".into(), "false".into()),
        ("MESHGUARD__MYSQL__URL".into(), url_of(db)),
        ("MESHGUARD__TOPICS__PARTIALS".into(), format!("{}.partials.{tag}", names.alerts)),
        ("MESHGUARD__TOPICS__QUALITY_STATE".into(), format!("{}.state.{tag}", names.alerts)),
    ]
}

fn start(kafka: &str, dir: &Path, names: &Names, env: &[(String, String)]) -> Service {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::start(kafka, dir, names, &refs)
}

/// The table's windows, polled until `done` holds.
async fn windows_until(
    database: &str,
    label: &str,
    within: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let docs = mongo_docs(database, "quality_metrics", doc! { "source": label }).await;
        if done(&docs) {
            return docs;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: windows never met the condition within {within:?} (volume {}, invalid {}): {:#?}",
            sum(&docs, "volume"),
            sum(&docs, "invalid"),
            docs.iter().rev().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn scanned_rows(services: &[&Service], label: &str) -> f64 {
    services
        .iter()
        .filter_map(|s| s.get("/metrics"))
        .map(|(_, text)| metric_sum(&text, "meshguard_scan_rows_total", &[("source", label)]))
        .sum()
}

struct World {
    kafka: String,
    names: Names,
    rest: Rest,
    db: String,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(rest: Rest, prefix: &str) -> Self {
        let kafka = kafka();
        let topic = unique(prefix);
        create_topics(&kafka, &[&topic], 2).await;
        let db = unique("sched").replace('-', "_");
        if rest == Rest::Table {
            sql(&mysql(), &[format!("CREATE DATABASE {db}")]).await;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        product(dir.path(), rest, &db, &topic);
        Self { kafka, names: Names::new(), rest, db, dir }
    }

    fn label(&self) -> &'static str {
        self.rest.label()
    }

    /// The table or collection, empty.
    async fn create(&self) {
        match self.rest {
            Rest::Table => sql(&url_of(&self.db), &[TABLE.to_owned()]).await,
            Rest::Collection => {
                let coll = collection(&self.db).await;
                let client = coll.client().clone();
                client.database(&self.db).create_collection("payment_analytics").await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// Rows `from..to`, written now; `bad` ones break the contract (a status outside the enum,
    /// a risk score above 1).
    async fn insert(&self, from: u32, to: u32, bad: bool) {
        match self.rest {
            Rest::Table => {
                let status = if bad { "LOST" } else { "COMPLETED" };
                let values: Vec<String> = (from..to)
                    .map(|n| format!("('{}', {}, 10.50, 'EUR', '{status}', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))", key(n), n + 1))
                    .collect();
                let insert = format!(
                    "INSERT INTO pay (payment_id, customer_id, amount, currency, status, created_at, updated_at) VALUES {}",
                    values.join(", ")
                );
                sql(&url_of(&self.db), &[insert]).await;
            }
            Rest::Collection => {
                let risk = if bad { 1.5 } else { 0.25 };
                let docs: Vec<bson::Document> = (from..to)
                    .map(|n| {
                        doc! { "payment_id": key(n), "customer_id": i64::from(n) + 1, "amount": 10.5, "currency": "EUR",
                        "channel": "ONLINE", "risk_score": risk, "processed_at": now_bson(), "updated_at": now_bson() }
                    })
                    .collect();
                let _ = collection(&self.db).await.insert_many(docs).await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    /// The bad rows fixed; each update moves the row's event time.
    async fn fix(&self) {
        match self.rest {
            Rest::Table => {
                let update = "UPDATE pay SET status = 'COMPLETED', updated_at = UTC_TIMESTAMP(6) WHERE status = 'LOST'";
                sql(&url_of(&self.db), &[update.to_owned()]).await;
            }
            Rest::Collection => {
                let fixed = collection(&self.db)
                    .await
                    .update_many(doc! { "risk_score": 1.5 }, doc! { "$set": { "risk_score": 0.5, "updated_at": now_bson() } })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(fixed.modified_count, 5);
            }
        }
    }

    async fn drop_database(&self) {
        match self.rest {
            Rest::Table => sql(&mysql(), &[format!("DROP DATABASE {}", self.db)]).await,
            Rest::Collection => {
                let coll = collection(&self.db).await;
                coll.client().database(&self.db).drop().await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

async fn two_instances_read_each_change_once_and_alert(rest: Rest) {
    let w = World::new(rest, "sched").await;
    let label = w.label();
    let env = env(&w.names, &w.db, "a");
    let services: Vec<Service> = (0..2).map(|_| start(&w.kafka, w.dir.path(), &w.names, &env)).collect();
    for s in &services {
        s.wait_ready(Duration::from_secs(60));
    }
    let all: Vec<&Service> = services.iter().collect();
    // No table or collection yet: the owner says so in a metric and tries again; nobody exits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let errors: f64 = all
            .iter()
            .filter_map(|s| s.get("/metrics"))
            .map(|(_, text)| metric_sum(&text, "meshguard_scan_errors_total", &[("source", label)]))
            .sum();
        if errors > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no scan error counted for the missing {label}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in &all {
        assert!(matches!(s.get("/healthz"), Some((200, _))), "an instance stopped over a missing {label}");
    }
    // Good rows, then bad rows: a validity alert fires on the source.
    w.create().await;
    w.insert(0, 20, false).await;
    windows_until(&w.names.database, label, Duration::from_secs(60), |d| sum(d, "volume") == 20).await;
    w.insert(20, 25, true).await;
    let alerts =
        read_json_until(&w.kafka, &w.names.alerts, Duration::from_secs(60), |a| !alerts_of(a, label, "validity", "firing").is_empty());
    let firing = alerts_of(&alerts, label, "validity", "firing")[0].clone();
    // Fixed: the episode resolves.
    w.fix().await;
    let alerts =
        read_json_until(&w.kafka, &w.names.alerts, Duration::from_secs(60), |a| !alerts_of(a, label, "validity", "resolved").is_empty());
    assert_eq!(alerts_of(&alerts, label, "validity", "resolved")[0]["id"], firing["id"]);
    // Every change read once by the group: 20 + 5 inserts and 5 updates, whichever instance
    // owned the source, and nothing more in the windows closed well after the last change.
    let fixed = time::OffsetDateTime::now_utc();
    let windows = windows_until(&w.names.database, label, Duration::from_secs(60), |d| {
        d.iter().any(|w| {
            w["window_start"]
                .as_str()
                .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                .is_some_and(|t| t > fixed + time::Duration::seconds(4))
        })
    })
    .await;
    assert_eq!((sum(&windows, "volume"), sum(&windows, "invalid")), (30, 5), "each change counted once");
    // Rows read, by every instance: 30, or a few more if the source's owner moved after a scan
    // whose window was still open (its successor reads those rows again); 60 would be a scan
    // per instance.
    let read = scanned_rows(&all, label);
    assert!((30.0..60.0).contains(&read), "the group read each change once, not once per instance: {read}");
    assert!(windows.iter().all(|w| w["topic"] == label && w.get("late").is_none()), "a source's windows name it");
    // The source stopped changing: its newest row ages past the 3 s SLA.
    let alerts =
        read_json_until(&w.kafka, &w.names.alerts, Duration::from_secs(60), |a| !alerts_of(a, label, "freshness", "firing").is_empty());
    let stale = alerts_of(&alerts, label, "freshness", "firing")[0].clone();
    assert_eq!(stale["product"], "sched-test");
    drop(services);
    w.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_read_each_change_once_alert_on_bad_rows_and_on_a_stale_table() {
    two_instances_read_each_change_once_and_alert(Rest::Table).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_read_each_change_once_alert_on_bad_documents_and_on_a_stale_collection() {
    two_instances_read_each_change_once_and_alert(Rest::Collection).await;
}

async fn the_owner_killed_between_scans_leaves_each_change_counted_once(rest: Rest) {
    let w = World::new(rest, "sched-kill").await;
    let label = w.label();
    w.create().await;
    w.insert(0, 40, false).await;
    let env = env(&w.names, &w.db, "b");
    let first = start(&w.kafka, w.dir.path(), &w.names, &env);
    first.wait_ready(Duration::from_secs(60));
    // The first 40 rows counted in a closed window (its mark is in the state topic) …
    windows_until(&w.names.database, label, Duration::from_secs(60), |d| sum(d, "volume") == 40).await;
    // … 5 more scanned into a window still open when the owner dies.
    w.insert(40, 45, false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while scanned_rows(&[&first], label) < 45.0 {
        assert!(Instant::now() < deadline, "the first owner never scanned rows 40..45");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.signal(9);
    drop(first);
    w.insert(45, 50, false).await;
    let second = start(&w.kafka, w.dir.path(), &w.names, &env);
    second.wait_ready(Duration::from_secs(60));
    let windows = windows_until(&w.names.database, label, Duration::from_secs(90), |d| sum(d, "volume") >= 50).await;
    // A few windows more: a second count would show by now.
    let last = windows.len();
    let windows = windows_until(&w.names.database, label, Duration::from_secs(30), |d| d.len() >= last + 3).await;
    // 90 would be the closed window's 40 read again, 45 the open window's 5 lost.
    assert_eq!(sum(&windows, "volume"), 50, "rows of windows lost with the first owner read again, none twice");
    let mut starts: Vec<&str> = windows.iter().filter_map(|w| w["window_start"].as_str()).collect();
    starts.sort_unstable();
    let n = starts.len();
    starts.dedup();
    assert_eq!(starts.len(), n, "one document per window");
    drop(second);
    w.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_of_a_table_killed_between_scans_leaves_each_change_counted_once() {
    the_owner_killed_between_scans_leaves_each_change_counted_once(Rest::Table).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_of_a_collection_killed_between_scans_leaves_each_change_counted_once() {
    the_owner_killed_between_scans_leaves_each_change_counted_once(Rest::Collection).await;
}
