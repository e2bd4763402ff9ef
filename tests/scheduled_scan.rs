//! Scheduled scans in `run` (`scan.interval_ms`) against the real Kafka, MariaDB and
//! MongoDB-wire servers, with two instances of the group: a missing table is a metric and a
//! retry, never a crash; every changed row is read once per change by the group (not once per
//! instance); bad rows fire a validity alert that resolves once they are fixed; a table that
//! stops changing breaches its freshness SLA; a killed owner's successor counts nothing twice.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use mongodb::bson::doc;
use sqlx::Connection;

const LABEL: &str = "mysql:pay";

/// A product whose payment contract reads `topic` and rests in table `pay` of `db`.
fn product(dir: &Path, db: &str, topic: &str) {
    let yaml = format!(
        "apiVersion: datamesh.banking.com/v1\nkind: DataProduct\nmetadata:\n  name: sched-test\n  domain: schedtest\n  version: \"1.0.0\"\n  owner: t@example.com\nspec:\n  sources:\n    mysql:\n      database: {db}\n      tables: [pay]\n  contracts:\n    - name: payment-schema\n      version: \"1.0.0\"\n      schema: schemas/payment-schema.json\n      quality:\n        freshness: 3s\n        completeness: 100%\n        accuracy: 99.9%\n      topics:\n        - {topic}\n      source: {{mysql: {{table: pay, keyColumn: payment_id}}}}\n  apis:\n    kafka:\n      topics:\n        - {topic}\n"
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

/// Rows `from..to`, written now (`status` 'LOST' breaks the contract's enum).
fn insert(from: u32, to: u32, status: &str) -> String {
    let values: Vec<String> =
        (from..to).map(|n| format!("('{}', {}, 10.50, 'EUR', '{status}', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))", key(n), n + 1)).collect();
    format!("INSERT INTO pay (payment_id, customer_id, amount, currency, status, created_at, updated_at) VALUES {}", values.join(", "))
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
async fn windows_until(database: &str, within: Duration, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let docs = mongo_docs(database, "quality_metrics", doc! { "source": LABEL }).await;
        if done(&docs) {
            return docs;
        }
        assert!(
            Instant::now() < deadline,
            "{LABEL}: windows never met the condition within {within:?} (volume {}, invalid {}): {:#?}",
            sum(&docs, "volume"),
            sum(&docs, "invalid"),
            docs.iter().rev().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn scanned_rows(services: &[&Service]) -> f64 {
    services
        .iter()
        .filter_map(|s| s.get("/metrics"))
        .map(|(_, text)| metric_sum(&text, "meshguard_scan_rows_total", &[("source", LABEL)]))
        .sum()
}

struct World {
    kafka: String,
    names: Names,
    db: String,
    dir: tempfile::TempDir,
    topic: String,
}

async fn world(prefix: &str) -> World {
    let kafka = kafka();
    let topic = unique(prefix);
    create_topics(&kafka, &[&topic], 2).await;
    let db = unique("sched").replace('-', "_");
    sql(&mysql(), &[format!("CREATE DATABASE {db}")]).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    product(dir.path(), &db, &topic);
    World { kafka, names: Names::new(), db, dir, topic }
}

const TABLE: &str = "CREATE TABLE pay (payment_id CHAR(36) NOT NULL PRIMARY KEY, customer_id BIGINT NOT NULL, \
     amount DECIMAL(20,3) NULL, currency CHAR(3) NULL, status VARCHAR(16) NOT NULL, created_at DATETIME(6) NULL, \
     updated_at DATETIME(6) NULL)";

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_read_each_change_once_alert_on_bad_rows_and_on_a_stale_table() {
    let w = world("sched").await;
    let url = url_of(&w.db);
    let env = env(&w.names, &w.db, "a");
    let services: Vec<Service> = (0..2).map(|_| start(&w.kafka, w.dir.path(), &w.names, &env)).collect();
    for s in &services {
        s.wait_ready(Duration::from_secs(60));
    }
    let all: Vec<&Service> = services.iter().collect();
    // No table yet: the owner says so in a metric and tries again; nobody exits.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let errors: f64 = all
            .iter()
            .filter_map(|s| s.get("/metrics"))
            .map(|(_, text)| metric_sum(&text, "meshguard_scan_errors_total", &[("source", LABEL)]))
            .sum();
        if errors > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no scan error counted for the missing table");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in &all {
        assert!(matches!(s.get("/healthz"), Some((200, _))), "an instance stopped over a missing table");
    }
    // Good rows, then bad rows: a validity alert fires on the table.
    sql(&url, &[TABLE.to_owned(), insert(0, 20, "COMPLETED")]).await;
    windows_until(&w.names.database, Duration::from_secs(60), |d| sum(d, "volume") == 20).await;
    sql(&url, &[insert(20, 25, "LOST")]).await;
    let alerts =
        read_json_until(&w.kafka, &w.names.alerts, Duration::from_secs(60), |a| !alerts_of(a, LABEL, "validity", "firing").is_empty());
    let firing = alerts_of(&alerts, LABEL, "validity", "firing")[0].clone();
    // Fixed (each update moves the row's event time): the episode resolves.
    sql(&url, &["UPDATE pay SET status = 'COMPLETED', updated_at = UTC_TIMESTAMP(6) WHERE status = 'LOST'".to_owned()]).await;
    let alerts =
        read_json_until(&w.kafka, &w.names.alerts, Duration::from_secs(60), |a| !alerts_of(a, LABEL, "validity", "resolved").is_empty());
    assert_eq!(alerts_of(&alerts, LABEL, "validity", "resolved")[0]["id"], firing["id"]);
    // Every change read once by the group: 20 + 5 inserts and 5 updates, whichever instance
    // owned the table, and nothing more in the windows closed well after the last change.
    let fixed = time::OffsetDateTime::now_utc();
    let windows = windows_until(&w.names.database, Duration::from_secs(60), |d| {
        d.iter().any(|w| {
            w["window_start"]
                .as_str()
                .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                .is_some_and(|t| t > fixed + time::Duration::seconds(4))
        })
    })
    .await;
    assert_eq!((sum(&windows, "volume"), sum(&windows, "invalid")), (30, 5), "each change counted once");
    // Rows read, by every instance: 30, or a few more if the table's owner moved after a scan
    // whose window was still open (its successor reads those rows again); 60 would be a scan
    // per instance.
    let read = scanned_rows(&all);
    assert!((30.0..60.0).contains(&read), "the group read each change once, not once per instance: {read}");
    assert!(windows.iter().all(|w| w["topic"] == LABEL && w.get("late").is_none()), "a table's windows name it");
    // The table stopped changing: its newest row ages past the 3 s SLA.
    let alerts =
        read_json_until(&w.kafka, &w.names.alerts, Duration::from_secs(60), |a| !alerts_of(a, LABEL, "freshness", "firing").is_empty());
    let stale = alerts_of(&alerts, LABEL, "freshness", "firing")[0].clone();
    assert_eq!(stale["product"], "sched-test");
    drop(services);
    sql(&mysql(), &[format!("DROP DATABASE {}", w.db)]).await;
    let _ = &w.topic;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_killed_between_scans_leaves_each_change_counted_once() {
    let w = world("sched-kill").await;
    let url = url_of(&w.db);
    sql(&url, &[TABLE.to_owned(), insert(0, 40, "COMPLETED")]).await;
    let env = env(&w.names, &w.db, "b");
    let first = start(&w.kafka, w.dir.path(), &w.names, &env);
    first.wait_ready(Duration::from_secs(60));
    // The first 40 rows counted in a closed window (its mark is in the state topic) …
    windows_until(&w.names.database, Duration::from_secs(60), |d| sum(d, "volume") == 40).await;
    // … 5 more scanned into a window still open when the owner dies.
    sql(&url, &[insert(40, 45, "COMPLETED")]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while scanned_rows(&[&first]) < 45.0 {
        assert!(Instant::now() < deadline, "the first owner never scanned rows 40..45");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.signal(9);
    drop(first);
    sql(&url, &[insert(45, 50, "COMPLETED")]).await;
    let second = start(&w.kafka, w.dir.path(), &w.names, &env);
    second.wait_ready(Duration::from_secs(60));
    let windows = windows_until(&w.names.database, Duration::from_secs(90), |d| sum(d, "volume") >= 50).await;
    // A few windows more: a second count would show by now.
    let last = windows.len();
    let windows = windows_until(&w.names.database, Duration::from_secs(30), |d| d.len() >= last + 3).await;
    // 90 would be the closed window's 40 read again, 45 the open window's 5 lost.
    assert_eq!(sum(&windows, "volume"), 50, "rows of windows lost with the first owner read again, none twice");
    let mut starts: Vec<&str> = windows.iter().filter_map(|w| w["window_start"].as_str()).collect();
    starts.sort_unstable();
    let n = starts.len();
    starts.dedup();
    assert_eq!(starts.len(), n, "one document per window");
    drop(second);
    sql(&mysql(), &[format!("DROP DATABASE {}", w.db)]).await;
}
