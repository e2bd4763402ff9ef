//! Secure connections against the real servers of `testcontainers/up`: Kafka over SASL_SSL with
//! SCRAM-SHA-512 (127.0.0.1:9094), MariaDB over TLS with a password user, FerretDB with SCRAM
//! credentials (127.0.0.1:27018). Right settings process events; a wrong password or CA ends
//! `meshguard run` at start-up with a message naming the problem, after one attempt (no retry
//! storm); no password ever shows in the output, in `/metrics` or in an error message.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {START_HINT}"))
}

/// The secured endpoints exported by `testcontainers/env`.
struct Secured {
    kafka: String,
    kafka_user: String,
    kafka_password: String,
    ca: String,
    other_ca: String,
    mysql_password: String,
    mysql_user: String,
    mysql: String,
    mongo: String,
    mongo_user: String,
    mongo_password: String,
}

impl Secured {
    fn get() -> Self {
        let s = Self {
            kafka: env("MESHGUARD_TEST_KAFKA_SASL_SSL"),
            kafka_user: env("MESHGUARD_TEST_KAFKA_USER"),
            kafka_password: env("MESHGUARD_TEST_KAFKA_PASSWORD"),
            ca: env("MESHGUARD_TEST_TLS_CA"),
            other_ca: env("MESHGUARD_TEST_TLS_OTHER_CA"),
            mysql_user: env("MESHGUARD_TEST_MYSQL_TLS_USER"),
            mysql_password: env("MESHGUARD_TEST_MYSQL_TLS_PASSWORD"),
            mysql: env("MESHGUARD_TEST_MYSQL_TLS"),
            mongo: env("MESHGUARD_TEST_MONGODB_AUTH"),
            mongo_user: env("MESHGUARD_TEST_MONGODB_USER"),
            mongo_password: env("MESHGUARD_TEST_MONGODB_PASSWORD"),
        };
        for f in [&s.ca, &s.other_ca] {
            assert!(PathBuf::from(f).is_file(), "{f} is missing: {START_HINT}");
        }
        s
    }

    /// `mysql://user:password@host/banking?ssl-mode=VERIFY_IDENTITY&ssl-ca=CA`.
    fn mysql_url(&self, password: &str, ca: &str) -> String {
        let rest = self.mysql.trim_start_matches("mysql://");
        format!("mysql://{}:{password}@{rest}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}", self.mysql_user)
    }

    fn mongo_uri(&self, password: &str) -> String {
        format!("mongodb://{}:{password}@{}/?authSource=admin", self.mongo_user, self.mongo)
    }

    /// Environment of a fully secured `meshguard run`.
    fn run_env(&self) -> Vec<(String, String)> {
        [
            ("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS", self.kafka.clone()),
            ("MESHGUARD__KAFKA__SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("MESHGUARD__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512".into()),
            ("MESHGUARD__KAFKA__SASL_USERNAME", self.kafka_user.clone()),
            ("MESHGUARD__KAFKA__SASL_PASSWORD", self.kafka_password.clone()),
            ("MESHGUARD__KAFKA__SSL_CA_LOCATION", self.ca.clone()),
            ("MESHGUARD__MYSQL__URL", self.mysql_url(&self.mysql_password, &self.ca)),
            ("MESHGUARD__MONGODB__URI", self.mongo_uri(&self.mongo_password)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn passwords(&self) -> [&str; 3] {
        [&self.kafka_password, &self.mysql_password, &self.mongo_password]
    }
}

/// A `meshguard run` whose stdout and stderr go to a file, so the test can read them.
struct Run {
    child: Child,
    http: String,
    log: tempfile::NamedTempFile,
    _products: Products,
}

impl Run {
    fn start(topic: &str, names: &Names, env: &[(String, String)]) -> Self {
        let products = Products::payments(&[topic]);
        let log = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        let out = log.reopen().unwrap_or_else(|e| panic!("{e}"));
        let err = log.reopen().unwrap_or_else(|e| panic!("{e}"));
        let http = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(binary());
        let _ = cmd
            .arg("run")
            .current_dir(repo())
            .env("MESHGUARD__KAFKA__GROUP_ID", &names.group)
            .env("MESHGUARD__PRODUCTS__DIR", products.dir.path())
            .env("MESHGUARD__SCHEMAS__DIR", repo().join("schemas"))
            .env("MESHGUARD__TOPICS__DLQ", &names.dlq)
            .env("MESHGUARD__TOPICS__ALERTS", &names.alerts)
            .env("MESHGUARD__TOPICS__LINEAGE", &names.lineage)
            .env("MESHGUARD__TOPICS__PARTIALS", format!("{}.partials", names.alerts))
            .env("MESHGUARD__TOPICS__QUALITY_STATE", format!("{}.quality-state", names.alerts))
            .env("MESHGUARD__TOPICS__CLAIMS", format!("{}.claims", names.alerts))
            .env("MESHGUARD__HTTP__ADDR", &http)
            .env("MESHGUARD__MONGODB__DATABASE", &names.database)
            .env("MESHGUARD__MONGODB__URI", mongodb())
            .env("MESHGUARD__MYSQL__URL", mysql())
            // As chatty as it gets: a secret in any log line would show.
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for (k, v) in env {
            let _ = cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn meshguard: {e}"));
        Self { child, http, log, _products: products }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits for the exit (the bound only guards against a hang) and returns the code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "meshguard did not exit; output:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_no_secret(text: &str, secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "{what} shows a password ({s}):\n{text}");
    }
}

/// Everything secured at once: events flow over SASL_SSL, MariaDB is reached over TLS with the
/// password user, lineage is written to the FerretDB that demands credentials, and neither the
/// output nor `/metrics` shows any of the three passwords.
#[tokio::test(flavor = "multi_thread")]
async fn secured_run_processes_events_and_never_shows_a_password() {
    let plain = kafka();
    let sec = Secured::get();
    let topic = unique("secure-payments");
    create_topics(&plain, &[&topic], 3).await;
    let names = Names::new();
    let sent = produce_payments(&plain, &[&topic], 60, 0.2, 7).await;
    let invalid = sent.iter().filter(|s| !s.valid).count();
    assert!(invalid > 0 && invalid < sent.len());

    let run = Run::start(&topic, &names, &sec.run_env());
    let deadline = Instant::now() + Duration::from_secs(90);
    while committed_total(&plain, &names.group, &[&topic], 3) < 60 {
        let out = run.output();
        let tail: Vec<&str> = out.lines().rev().take(40).collect();
        assert!(Instant::now() < deadline, "not all committed; last lines (newest first):\n{}", tail.join("\n"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let dead = read_all(&plain, &names.dlq, invalid, Duration::from_secs(30));
    assert_eq!(dead.len(), invalid, "every invalid record is dead-lettered once");

    // Lineage reached the FerretDB that requires SCRAM credentials: folded into the records'
    // documents (keyed records) or in `data_lineage` (records without a key).
    let client = mongodb::Client::with_uri_str(sec.mongo_uri(&sec.mongo_password)).await.unwrap_or_else(|e| panic!("{e}"));
    let db = client.database(&names.database);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut docs = 0;
    while Instant::now() < deadline {
        docs = db
            .collection::<bson::Document>(meshguard::sink::mongo::LINEAGE)
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap_or_else(|e| panic!("count: {e}"));
        for store in db.list_collection_names().await.unwrap_or_else(|e| panic!("list: {e}")).iter().filter(|n| n.starts_with("records.")) {
            let mut cursor =
                db.collection::<bson::Document>(store).find(mongodb::bson::doc! {}).await.unwrap_or_else(|e| panic!("find: {e}"));
            while cursor.advance().await.unwrap_or_else(|e| panic!("cursor: {e}")) {
                let d = cursor.deserialize_current().unwrap_or_else(|e| panic!("{e}"));
                docs += d.get_array("_lineage").map_or(0, |l| l.len() as u64);
            }
        }
        if docs >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(docs, 60, "one lineage entry per record in the authenticated MongoDB");

    let (code, metrics) = http_get(&run.http, "/metrics").unwrap_or_else(|| panic!("/metrics does not answer; output:\n{}", run.output()));
    assert_eq!(code, 200);
    assert!(metrics.contains("meshguard_"), "{metrics}");
    assert_no_secret(&metrics, &sec.passwords(), "/metrics");
    let output = run.output();
    assert!(output.contains("stream started"), "{output}");
    assert_no_secret(&output, &sec.passwords(), "the log");
}

fn kafka_env(sec: &Secured, password: &str, ca: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = sec.run_env().into_iter().filter(|(k, _)| k.starts_with("MESHGUARD__KAFKA__")).collect();
    for (k, v) in &mut env {
        if k == "MESHGUARD__KAFKA__SASL_PASSWORD" {
            *v = password.to_owned();
        }
        if k == "MESHGUARD__KAFKA__SSL_CA_LOCATION" {
            *v = ca.to_owned();
        }
    }
    env
}

/// A wrong SCRAM password: exit 2 at start-up, the message says authentication failed, the
/// broker was asked once or twice (not a reconnect loop), and the password is not shown.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_wrong_password_fails_fast_with_a_clear_message() {
    let _ = kafka();
    let sec = Secured::get();
    let wrong = "not-the-Kafka-password-1d6e";
    let mut run = Run::start(&unique("secure-wrong-pw"), &Names::new(), &kafka_env(&sec, wrong, &sec.ca));
    let code = run.exit_code();
    let output = run.output();
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("meshguard: Kafka authentication failed (SASL_SSL (SCRAM-SHA-512 as user \"meshguard\"))"), "{output}");
    assert!(output.contains("invalid credentials"), "the broker's reason is passed on: {output}");
    let attempts = output.lines().filter(|l| l.contains("Authentication failed")).count();
    assert!((1..=3).contains(&attempts), "{attempts} authentication failures reported:\n{output}");
    assert!(!output.contains("stream started"), "{output}");
    assert_no_secret(&output, &[wrong, &sec.kafka_password], "the log");
}

/// A CA that did not sign the broker's certificate: exit 2, a TLS message about the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_wrong_ca_fails_fast_with_a_tls_error() {
    let _ = kafka();
    let sec = Secured::get();
    let mut run = Run::start(&unique("secure-wrong-ca"), &Names::new(), &kafka_env(&sec, &sec.kafka_password, &sec.other_ca));
    let code = run.exit_code();
    let output = run.output();
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("meshguard: Kafka TLS handshake failed"), "{output}");
    assert!(output.contains("certificate verify failed"), "{output}");
    assert!(!output.contains("stream started"), "{output}");
    assert_no_secret(&output, &[&sec.kafka_password], "the log");
}

/// MariaDB: TLS verified against the test CA with the password user works; a wrong password, a
/// wrong CA and a plain (non-TLS) connection for a `REQUIRE SSL` user each fail with a message
/// naming the problem and without the password.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_tls_with_a_password() {
    let _ = mysql();
    let sec = Secured::get();
    let ok = sec.mysql_url(&sec.mysql_password, &sec.ca);
    meshguard::reconcile::mysql::check_credentials(&ok).await.unwrap_or_else(|e| panic!("{e}"));

    let wrong = sec.mysql_url("not-the-MariaDB-password-77", &sec.ca);
    let err =
        meshguard::reconcile::mysql::check_credentials(&wrong).await.err().unwrap_or_else(|| panic!("a wrong password connected")).message;
    assert!(err.starts_with("MySQL authentication failed"), "{err}");
    assert!(err.contains("Access denied"), "{err}");
    assert_no_secret(&err, &["not-the-MariaDB-password-77"], "the error");

    let wrong_ca = sec.mysql_url(&sec.mysql_password, &sec.other_ca);
    let err =
        meshguard::reconcile::mysql::check_credentials(&wrong_ca).await.err().unwrap_or_else(|| panic!("a wrong CA connected")).message;
    assert!(err.starts_with("MySQL TLS handshake failed"), "{err}");
    assert_no_secret(&err, &[&sec.mysql_password], "the error");

    let plain = ok.replace("ssl-mode=VERIFY_IDENTITY", "ssl-mode=DISABLED");
    let err = meshguard::reconcile::mysql::check_credentials(&plain)
        .await
        .err()
        .unwrap_or_else(|| panic!("REQUIRE SSL was not enforced"))
        .message;
    assert!(err.starts_with("MySQL authentication failed"), "{err}");
    assert_no_secret(&err, &[&sec.mysql_password], "the error");
}

/// `meshguard run` with a wrong MariaDB password stops at start-up (exit 2) with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_wrong_password_stops_run_at_start_up() {
    let plain = kafka();
    let sec = Secured::get();
    let wrong = "not-the-MariaDB-password-88";
    let env = vec![
        ("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS".to_owned(), plain),
        ("MESHGUARD__MYSQL__URL".to_owned(), sec.mysql_url(wrong, &sec.ca)),
    ];
    let mut run = Run::start(&unique("secure-mysql"), &Names::new(), &env);
    let code = run.exit_code();
    let output = run.output();
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("meshguard: MySQL authentication failed"), "{output}");
    assert!(output.contains("meshguard:***@"), "the URL is shown redacted: {output}");
    assert_eq!(output.matches("Access denied").count(), 1, "one attempt: {output}");
    assert_no_secret(&output, &[wrong], "the log");
}

/// MongoDB (FerretDB with `--test-enable-new-auth`): without credentials nothing is allowed, with
/// a wrong password `meshguard run` stops at start-up (exit 2) after one attempt.
#[tokio::test(flavor = "multi_thread")]
async fn mongodb_credentials_are_required_and_checked() {
    let plain = kafka();
    let sec = Secured::get();
    // The server really enforces authentication.
    let anonymous = mongodb::Client::with_uri_str(format!("mongodb://{}/", sec.mongo)).await.unwrap_or_else(|e| panic!("{e}"));
    let refused = anonymous.database("x").collection::<bson::Document>("y").insert_one(mongodb::bson::doc! {"a": 1}).await;
    let refused = refused.err().unwrap_or_else(|| panic!("an anonymous insert was accepted"));
    assert!(refused.to_string().contains("requires authentication"), "{refused}");

    let wrong = "not-the-Mongo-password-5c";
    let env = vec![("MESHGUARD__KAFKA__BOOTSTRAP_SERVERS".to_owned(), plain), ("MESHGUARD__MONGODB__URI".to_owned(), sec.mongo_uri(wrong))];
    let mut run = Run::start(&unique("secure-mongo"), &Names::new(), &env);
    let code = run.exit_code();
    let output = run.output();
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("meshguard: MongoDB"), "{output}");
    assert!(output.contains("Authentication failed"), "{output}");
    assert!(!output.contains("MongoDB unavailable; waiting"), "an authentication failure is not retried: {output}");
    assert_no_secret(&output, &[wrong, &sec.mongo_password], "the log");
}
