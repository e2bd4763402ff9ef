//! `meshguard catalog` against the real MongoDB-wire server (FerretDB from `testcontainers/up`),
//! and `serve` / `run` following the stored catalog (`products.source = "mongodb"`) without a
//! restart: a changed schema holds the next request or batch, a broken revision is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};
use sha2::Sha256;

use common::{START_HINT, binary, bind_product, free_port, http_get, metric_sum, mongodb, repo};

const PAYMENTS: &str = "payments-data-product";
const SECRET: &str = "catalog-test-secret-catalog-test-secret-0123";
/// Valid under the shipped payments schema; invalid once currency must be USD.
const EUR_PAYMENT: &str = r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":7,"amount":19.99,"currency":"EUR","status":"COMPLETED","created_at":"2026-11-29T11:59:58Z"}"#;
const USD_PAYMENT: &str = r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e70","customer_id":7,"amount":19.99,"currency":"USD","status":"COMPLETED","created_at":"2026-11-29T11:59:58Z"}"#;

/// A configuration directory (`root/config/products`, `root/schemas`) holding copies of the
/// shipped products and schemas, to edit.
struct ConfigDir {
    root: tempfile::TempDir,
}

impl ConfigDir {
    fn shipped() -> Self {
        let root = tempfile::tempdir().unwrap();
        let products = root.path().join("config/products");
        std::fs::create_dir_all(&products).unwrap();
        for e in std::fs::read_dir(repo().join("config/products")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, products.join(p.file_name().unwrap())).unwrap();
        }
        let schemas = root.path().join("schemas");
        std::fs::create_dir_all(&schemas).unwrap();
        for e in std::fs::read_dir(repo().join("schemas")).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, schemas.join(p.file_name().unwrap())).unwrap();
            }
        }
        Self { root }
    }

    /// Only the payments product, bound to `topics`.
    fn payments_on(topics: &[&str]) -> Self {
        let dir = Self::shipped();
        for f in ["cards.yaml", "loans.yaml"] {
            std::fs::remove_file(dir.config().join("products").join(f)).unwrap();
        }
        bind_product(&dir.config().join("products"), "payments.yaml", topics);
        dir
    }

    fn config(&self) -> PathBuf {
        self.root.path().join("config")
    }

    fn schema(&self, name: &str) -> PathBuf {
        self.root.path().join("schemas").join(name)
    }

    /// The payments schema with currency restricted to USD.
    fn usd_only(&self) {
        let path = self.schema("payment-schema.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""^[A-Z]{3}$""#));
        std::fs::write(&path, text.replace(r#""^[A-Z]{3}$""#, r#""^USD$""#)).unwrap();
    }
}

fn fresh_db() -> String {
    format!("catalog_{}", uuid::Uuid::new_v4().simple())
}

fn meshguard(args: &[&str], database: &str, config: &Path) -> Output {
    let mut all = args.to_vec();
    let dir = config.display().to_string();
    all.extend(["--config", dir.as_str()]);
    Command::new(binary())
        .args(&all)
        .current_dir(repo())
        .env_remove("MESHGUARD_CONFIG")
        .env("MESHGUARD__MONGODB__URI", mongodb())
        .env("MESHGUARD__MONGODB__DATABASE", database)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn apply(database: &str, dir: &ConfigDir) -> String {
    let out = meshguard(&["catalog", "apply"], database, &dir.config());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn collection(database: &str) -> mongodb::Collection<Document> {
    let client = mongodb::Client::with_uri_str(mongodb()).await.unwrap_or_else(|e| panic!("MongoDB: {e}: {START_HINT}"));
    client.database(database).collection::<Document>("data_products")
}

async fn stored(database: &str) -> Vec<Document> {
    let mut cursor = collection(database).await.find(doc! {}).await.unwrap_or_else(|e| panic!("find: {e}: {START_HINT}"));
    let mut out = Vec::new();
    while cursor.advance().await.unwrap() {
        out.push(cursor.deserialize_current().unwrap());
    }
    out.sort_by(|a, b| a.get_str("_id").unwrap().cmp(b.get_str("_id").unwrap()));
    out
}

fn revision(d: &Document) -> i64 {
    match d.get("revision") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("revision: {other:?}"),
    }
}

/// `(id, revision, retired)` of every stored document.
async fn revisions(database: &str) -> Vec<(String, i64, bool)> {
    stored(database).await.iter().map(|d| (d.get_str("_id").unwrap().to_owned(), revision(d), d.get_bool("retired").unwrap())).collect()
}

#[tokio::test]
async fn apply_writes_revisions_that_change_only_with_the_content() {
    let db = fresh_db();
    let dir = ConfigDir::shipped();

    // Before anything is stored, diff says what apply would add (exit 1: something to do).
    let diff = meshguard(&["catalog", "diff"], &db, &dir.config());
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    assert!(String::from_utf8_lossy(&diff.stdout).contains("added"), "{}", text(&diff));
    assert!(stored(&db).await.is_empty(), "diff writes nothing");

    let first = apply(&db, &dir);
    assert!(first.contains("3 added"), "{first}");
    let expected =
        vec![("cards-data-product".to_owned(), 1, false), ("loans-data-product".to_owned(), 1, false), (PAYMENTS.to_owned(), 1, false)];
    assert_eq!(revisions(&db).await, expected);
    // The seed's shape at the top level, plus the schema texts and a hash.
    let docs = stored(&db).await;
    let payments = docs.iter().find(|d| d.get_str("_id").unwrap() == PAYMENTS).unwrap();
    assert_eq!(payments.get_document("metadata").unwrap().get_str("name").unwrap(), PAYMENTS);
    assert_eq!(payments.get_str("kind").unwrap(), "DataProduct");
    assert!(payments.get_str("hash").unwrap().starts_with("sha256:"));
    let files: Vec<&str> =
        payments.get_array("schemas").unwrap().iter().map(|s| s.as_document().unwrap().get_str("file").unwrap()).collect();
    assert!(files.contains(&"schemas/payment-schema.json"), "{files:?}");
    let schema_text = payments
        .get_array("schemas")
        .unwrap()
        .iter()
        .map(|s| s.as_document().unwrap())
        .find(|s| s.get_str("file").unwrap() == "schemas/payment-schema.json")
        .unwrap()
        .get_str("text")
        .unwrap()
        .to_owned();
    assert_eq!(schema_text, std::fs::read_to_string(dir.schema("payment-schema.json")).unwrap());

    // list and show read it back.
    let list = meshguard(&["catalog", "list"], &db, &dir.config());
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    for name in ["cards-data-product", "loans-data-product", PAYMENTS] {
        assert!(listed.lines().any(|l| l.starts_with(name) && l.contains("revision 1") && l.contains("in force")), "{listed}");
    }
    let show = meshguard(&["catalog", "show", PAYMENTS], &db, &dir.config());
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!((shown["name"].clone(), shown["revision"].clone(), shown["retired"].clone()), (json!(PAYMENTS), json!(1), json!(false)));
    assert_eq!(shown["schemas"]["schemas/payment-schema.json"], json!(schema_text));
    assert_eq!(shown["declaration"]["metadata"]["name"], json!(PAYMENTS));
    let missing = meshguard(&["catalog", "show", "no-such-product"], &db, &dir.config());
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-product"), "{}", text(&missing));

    // Applying the same content again changes nothing: same revisions, same hashes.
    let hashes: Vec<String> = stored(&db).await.iter().map(|d| d.get_str("hash").unwrap().to_owned()).collect();
    let again = apply(&db, &dir);
    assert!(again.contains("0 added, 0 changed, 0 restored, 0 retired, 3 unchanged"), "{again}");
    assert_eq!(revisions(&db).await, expected);
    assert_eq!(stored(&db).await.iter().map(|d| d.get_str("hash").unwrap().to_owned()).collect::<Vec<_>>(), hashes);
    let diff = meshguard(&["catalog", "diff"], &db, &dir.config());
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));

    // A changed contract schema bumps that product only, and diff names the file.
    dir.usd_only();
    let diff = meshguard(&["catalog", "diff"], &db, &dir.config());
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    assert!(String::from_utf8_lossy(&diff.stdout).contains("schemas/payment-schema.json changed"), "{}", text(&diff));
    let changed = apply(&db, &dir);
    assert!(changed.contains("1 changed"), "{changed}");
    assert_eq!(revisions(&db).await[2], (PAYMENTS.to_owned(), 2, false));
    assert_eq!(revisions(&db).await[0], ("cards-data-product".to_owned(), 1, false));

    // A product removed on disk is retired, not deleted.
    std::fs::remove_file(dir.config().join("products/cards.yaml")).unwrap();
    let retired = apply(&db, &dir);
    assert!(retired.contains("1 retired"), "{retired}");
    assert_eq!(revisions(&db).await[0], ("cards-data-product".to_owned(), 2, true));
    let list = meshguard(&["catalog", "list"], &db, &dir.config());
    assert!(String::from_utf8_lossy(&list.stdout).lines().any(|l| l.starts_with("cards-data-product") && l.contains("retired")));
    // Retiring again changes nothing.
    let _ = apply(&db, &dir);
    assert_eq!(revisions(&db).await[0], ("cards-data-product".to_owned(), 2, true));
}

#[tokio::test]
async fn a_broken_contract_is_refused_by_apply_with_its_file_named() {
    let db = fresh_db();
    let dir = ConfigDir::shipped();
    std::fs::write(dir.schema("loan-schema.json"), "{ \"type\": \"object\", ").unwrap();
    let out = meshguard(&["catalog", "apply"], &db, &dir.config());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("loans.yaml") && err.contains("loan-schema.json") && err.contains("not JSON"), "{err}");
    assert!(err.contains("nothing written"), "{err}");
    assert!(stored(&db).await.is_empty(), "a catalog that does not lint is not written at all");
}

/// The payments schema with currency restricted to one code: a distinct content per code.
fn only_currency(dir: &ConfigDir, code: &str) {
    let path = dir.schema("payment-schema.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""^[A-Z]{3}$""#));
    std::fs::write(&path, text.replace(r#""^[A-Z]{3}$""#, &format!(r#""^{code}$""#))).unwrap();
}

/// The revision `catalog apply` reported writing for `product` (its last plan's `-> N`).
fn applied_revision(out: &Output, product: &str) -> i64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rfind(|l| l.trim_start().starts_with(product)).unwrap_or_else(|| panic!("{}", text(out)));
    line.split("-> ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// Four applies of four different payments contracts, started together over revision 1: each
/// writes its own revision (2, 3, 4, 5 in some order), none overwrites another's number.
#[tokio::test]
async fn concurrent_applies_never_write_the_same_revision() {
    let db = fresh_db();
    let _ = apply(&db, &ConfigDir::shipped());
    let dirs: Vec<ConfigDir> = ["USD", "EUR", "GBP", "JPY"]
        .iter()
        .map(|code| {
            let dir = ConfigDir::shipped();
            only_currency(&dir, code);
            dir
        })
        .collect();
    let children: Vec<Child> = dirs
        .iter()
        .map(|dir| {
            Command::new(binary())
                .args(["catalog", "apply", "--config"])
                .arg(dir.config())
                .current_dir(repo())
                .env_remove("MESHGUARD_CONFIG")
                .env("MESHGUARD__MONGODB__URI", mongodb())
                .env("MESHGUARD__MONGODB__DATABASE", &db)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
    }
    let mut revisions: Vec<i64> = outs.iter().map(|o| applied_revision(o, PAYMENTS)).collect();
    revisions.sort_unstable();
    assert_eq!(revisions, vec![2, 3, 4, 5], "{}", outs.iter().map(text).collect::<Vec<_>>().join("\n"));
    let docs = stored(&db).await;
    let payments = docs.iter().find(|d| d.get_str("_id").unwrap() == PAYMENTS).unwrap();
    assert_eq!(revision(payments), 5);
    // The others were unchanged by every apply.
    assert!(docs.iter().filter(|d| d.get_str("_id").unwrap() != PAYMENTS).all(|d| revision(d) == 1));
}

/// The writes under `catalog apply`: a revision is claimed once, and the document replaced only
/// over the revision and hash read, so the second of two writers that read the same revision is
/// told, and nothing is overwritten.
#[tokio::test]
async fn a_write_over_a_revision_read_before_another_write_is_refused() {
    use meshguard::sink::mongo::MongoSink;
    let db = fresh_db();
    let _ = apply(&db, &ConfigDir::shipped());
    let store = MongoSink::connect(&mongodb(), &db, &[]).await.unwrap();
    let read = store.catalog().await.unwrap();
    let have = read.applied.iter().find(|p| p.name == PAYMENTS).unwrap().clone();
    assert_eq!(have.revision, 1);
    let next = |marker: &str| meshguard::product::stored::StoredProduct { revision: 2, hash: format!("sha256:{marker}"), ..have.clone() };
    let expected = Some((have.revision, have.hash.as_str()));
    assert!(store.put_product_if(&next("first"), expected).await.unwrap(), "the first writer writes revision 2");
    assert!(!store.put_product_if(&next("second"), expected).await.unwrap(), "the second, from the same read, is refused");
    assert!(!store.put_product_if(&next("third"), None).await.unwrap(), "one that read no document is refused too");
    let now = store.catalog().await.unwrap();
    let stored_now = now.applied.iter().find(|p| p.name == PAYMENTS).unwrap();
    assert_eq!((stored_now.revision, stored_now.hash.as_str()), (2, "sha256:first"));
    // The claim under it: the first writer of a revision holds it, the second is told.
    let claimed = next("claimed");
    let claimed = meshguard::product::stored::StoredProduct { revision: 3, ..claimed };
    assert_eq!(store.claim_revision(&claimed).await.unwrap(), meshguard::sink::catalog::Claim::Claimed);
    assert!(matches!(store.claim_revision(&claimed).await.unwrap(), meshguard::sink::catalog::Claim::Taken { claimed_at: Some(_) }));
    store.release_revision(&claimed).await;
    assert_eq!(store.claim_revision(&claimed).await.unwrap(), meshguard::sink::catalog::Claim::Claimed, "released");
    // A product never applied is inserted once.
    let fresh = meshguard::product::stored::StoredProduct { name: "new-product".into(), revision: 1, ..have.clone() };
    assert!(store.put_product_if(&fresh, None).await.unwrap());
    assert!(!store.put_product_if(&fresh, None).await.unwrap());
}

/// An HS256 JWT minted without the server's code.
fn token(roles: &[&str]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": "catalog-test", "iss": "meshguard", "aud": "datamesh-api", "exp": now + 3600, "iat": now, "roles": roles});
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_from_catalog(database: &str) -> Serve {
    serve_from_catalog_with(database, &[])
}

fn serve_from_catalog_with(database: &str, env: &[(&str, &str)]) -> Serve {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(binary())
        .arg("serve")
        .current_dir(repo())
        .env_remove("MESHGUARD_CONFIG")
        .env("MESHGUARD__API__ADDR", &addr)
        .env("MESHGUARD__MONGODB__URI", mongodb())
        .env("MESHGUARD__MONGODB__DATABASE", database)
        .env("MESHGUARD__AUTH__JWT_HS256_SECRET", SECRET)
        .env("MESHGUARD__PRODUCTS__SOURCE", "mongodb")
        .env("MESHGUARD__PRODUCTS__RELOAD_INTERVAL_MS", "200")
        // Products on disk that differ from the stored ones: the stored ones must be served.
        .env("MESHGUARD__PRODUCTS__DIR", "/nonexistent")
        .env("RUST_LOG", std::env::var("MESHGUARD_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut server = Serve { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(&server.addr, "/healthz"), Some((200, _))) {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("meshguard serve exited early: {status}");
        }
        assert!(Instant::now() < deadline, "serve did not answer /healthz within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// POSTs one record to `/{product}/validate`: (status, whether the record is valid).
fn validate(addr: &str, record: &str) -> (u16, Option<bool>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "POST /{PAYMENTS}/validate HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{record}",
        token(&["fraud-team"]),
        record.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let valid = serde_json::from_str::<Value>(body).ok().and_then(|v| v["results"][0]["valid"].as_bool());
    (status, valid)
}

/// Waits (polling the server, at most 30 s) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

#[tokio::test]
async fn serve_switches_to_a_new_revision_without_restart_and_refuses_a_broken_one() {
    let db = fresh_db();
    let dir = ConfigDir::shipped();
    let _ = apply(&db, &dir);
    let server = serve_from_catalog(&db);
    assert_eq!(validate(&server.addr, EUR_PAYMENT), (200, Some(true)), "revision 1 accepts EUR");
    assert_eq!(metric_sum(&scrape(&server.addr), "meshguard_catalog_revision", &[("product", PAYMENTS)]), 1.0);

    // A new apply that changes the schema: the next requests are held to it.
    dir.usd_only();
    let _ = apply(&db, &dir);
    eventually("serve rejects EUR under revision 2", || validate(&server.addr, EUR_PAYMENT) == (200, Some(false)));
    assert_eq!(validate(&server.addr, USD_PAYMENT), (200, Some(true)));
    assert_eq!(metric_sum(&scrape(&server.addr), "meshguard_catalog_revision", &[("product", PAYMENTS)]), 2.0);

    // A broken revision written straight to the collection: refused, revision 2 keeps serving.
    let coll = collection(&db).await;
    let mut doc = coll.find_one(doc! { "_id": PAYMENTS }).await.unwrap().unwrap();
    let schemas: Vec<Bson> = doc
        .get_array("schemas")
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.as_document().unwrap().clone();
            if s.get_str("file").unwrap() == "schemas/payment-schema.json" {
                let _ = s.insert("text", r#"{"type": "object", "properties": {"amount": {"type": 12}}}"#);
            }
            Bson::Document(s)
        })
        .collect();
    let _ = doc.insert("schemas", schemas);
    let _ = doc.insert("revision", 3_i64);
    let _ = coll.replace_one(doc! { "_id": PAYMENTS }, doc).await.unwrap();
    eventually("the broken revision is counted as refused", || {
        metric_sum(&scrape(&server.addr), "meshguard_catalog_refusals_total", &[]) >= 1.0
    });
    assert_eq!(validate(&server.addr, EUR_PAYMENT), (200, Some(false)), "revision 2 still in force");
    assert_eq!(validate(&server.addr, USD_PAYMENT), (200, Some(true)), "revision 2 still in force");
    assert_eq!(metric_sum(&scrape(&server.addr), "meshguard_catalog_revision", &[("product", PAYMENTS)]), 2.0);
    // Refused once, not on every poll.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(metric_sum(&scrape(&server.addr), "meshguard_catalog_refusals_total", &[]), 1.0);
}

/// The anonymous limiter's buckets are the process's, not a revision's: an address that spent
/// its burst is still refused after `serve` switches to a new catalog revision.
#[tokio::test]
async fn a_catalog_switch_does_not_refill_the_anonymous_buckets() {
    let db = fresh_db();
    let dir = ConfigDir::shipped();
    let _ = apply(&db, &dir);
    // Three requests without credentials, then never another token.
    let server = serve_from_catalog_with(&db, &[("MESHGUARD__API__ANONYMOUS_BURST", "3"), ("MESHGUARD__API__ANONYMOUS_PER_SECOND", "0")]);
    let anonymous = || http_get(&server.addr, &format!("/{PAYMENTS}/alerts")).map(|(status, _)| status);
    for _ in 0..3 {
        assert_eq!(anonymous(), Some(401));
    }
    assert_eq!(anonymous(), Some(429), "the burst is spent");
    dir.usd_only();
    let _ = apply(&db, &dir);
    // Authenticated requests are not limited: they see the switch.
    eventually("serve rejects EUR under revision 2", || validate(&server.addr, EUR_PAYMENT) == (200, Some(false)));
    assert_eq!(metric_sum(&scrape(&server.addr), "meshguard_catalog_revision", &[("product", PAYMENTS)]), 2.0);
    assert_eq!(anonymous(), Some(429), "the new revision kept the spent bucket");
}

#[tokio::test]
async fn run_holds_the_batches_after_an_apply_to_the_new_revision() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let kafka = common::kafka();
    let topic = common::unique("catalog-run");
    common::create_topics(&kafka, &[topic.as_str()], 1).await;
    let names = common::Names::new();
    let dir = ConfigDir::payments_on(&[topic.as_str()]);
    let _ = apply(&names.database, &dir);
    let service = common::Service::start(
        &kafka,
        Path::new("/nonexistent"),
        &names,
        &[("MESHGUARD__PRODUCTS__SOURCE", "mongodb"), ("MESHGUARD__PRODUCTS__RELOAD_INTERVAL_MS", "200")],
    );
    service.wait_ready(Duration::from_secs(60));
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &kafka).create().unwrap();
    let send = |payload: &'static str| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let _ = producer.send(FutureRecord::<(), str>::to(&topic).payload(payload), Duration::from_secs(10)).await.unwrap();
        }
    };
    send(EUR_PAYMENT).await;
    common::wait_committed(&kafka, &names.group, &[topic.as_str()], 1, 1, Duration::from_secs(60));

    dir.usd_only();
    let _ = apply(&names.database, &dir);
    eventually("run switched to revision 2", || {
        metric_sum(&service.get("/metrics").map(|(_, b)| b).unwrap_or_default(), "meshguard_catalog_revision", &[("product", PAYMENTS)])
            == 2.0
    });
    send(EUR_PAYMENT).await;
    send(USD_PAYMENT).await;
    common::wait_committed(&kafka, &names.group, &[topic.as_str()], 1, 3, Duration::from_secs(60));
    let dead = common::read_all(&kafka, &names.dlq, 1, Duration::from_secs(30));
    let offsets: Vec<i64> = dead.iter().map(|d| common::position(d).2).collect();
    assert_eq!(offsets, vec![1], "only the EUR payment after the apply is dead-lettered");
}

#[tokio::test]
async fn run_from_files_never_overwrites_an_applied_document() {
    let kafka = common::kafka();
    let topic = common::unique("catalog-files");
    common::create_topics(&kafka, &[topic.as_str()], 1).await;
    let names = common::Names::new();
    let dir = ConfigDir::payments_on(&[topic.as_str()]);
    let _ = apply(&names.database, &dir);
    let before = stored(&names.database).await;
    // The files `run` reads differ from the applied catalog (another schema).
    dir.usd_only();
    let service = common::Service::start(
        &kafka,
        &dir.config().join("products"),
        &names,
        &[("MESHGUARD__SCHEMAS__DIR", dir.root.path().join("schemas").to_str().unwrap())],
    );
    service.wait_ready(Duration::from_secs(60));
    // `run` stores declarations before it consumes (ready), so the documents are final here.
    let after = stored(&names.database).await;
    assert_eq!(after.len(), 1);
    assert_eq!(revision(&after[0]), 1);
    assert_eq!(after[0].get_str("hash").unwrap(), before[0].get_str("hash").unwrap());
    assert_eq!(after[0].get_array("schemas").unwrap(), before[0].get_array("schemas").unwrap());
}

/// Group-wide quality follows an apply too: the owner of the windows (a thread beside the
/// stream) judges and labels the windows closed after the switch with the new contract.
#[tokio::test]
async fn the_group_wide_windows_follow_an_applied_revision() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let kafka = common::kafka();
    let topic = common::unique("catalog-owner");
    common::create_topics(&kafka, &[topic.as_str()], 1).await;
    let names = common::Names::new();
    let dir = ConfigDir::payments_on(&[topic.as_str()]);
    let _ = apply(&names.database, &dir);
    let partials = format!("{}.partials", names.alerts);
    let state = format!("{}.state", names.alerts);
    let service = common::Service::start(
        &kafka,
        Path::new("/nonexistent"),
        &names,
        &[
            ("MESHGUARD__PRODUCTS__SOURCE", "mongodb"),
            ("MESHGUARD__PRODUCTS__RELOAD_INTERVAL_MS", "200"),
            ("MESHGUARD__QUALITY__SCOPE", "group"),
            ("MESHGUARD__QUALITY__WINDOW_MS", "1000"),
            ("MESHGUARD__QUALITY__LATENESS_MS", "1000"),
            ("MESHGUARD__MYSQL__ENABLED", "false"),
            ("MESHGUARD__TOPICS__PARTIALS", partials.as_str()),
            ("MESHGUARD__TOPICS__QUALITY_STATE", state.as_str()),
        ],
    );
    service.wait_ready(Duration::from_secs(60));
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &kafka).create().unwrap();
    let send = || {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            let _ = producer.send(FutureRecord::<(), str>::to(&topic).payload(USD_PAYMENT), Duration::from_secs(10)).await.unwrap();
        }
    };
    // Windows with records, labelled with version 1.0.0 of the shipped contract.
    let versions = || async {
        common::mongo_docs(&names.database, "quality_metrics", doc! { "topic": &topic, "volume": { "$gt": 0 } })
            .await
            .iter()
            .filter_map(|d| d.get("contract_version").and_then(Value::as_str).map(str::to_owned))
            .collect::<Vec<String>>()
    };
    send().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while versions().await.is_empty() {
        assert!(Instant::now() < deadline, "no group-wide window with the record within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(versions().await, vec!["1.0.0".to_owned()]);

    // Apply the same contract as version 1.1.0.
    let yaml = dir.config().join("products/payments.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    let bumped = text.replacen("      version: \"1.0.0\"", "      version: \"1.1.0\"", 1);
    assert_ne!(bumped, text);
    std::fs::write(&yaml, bumped).unwrap();
    let _ = apply(&names.database, &dir);
    eventually("run switched to revision 2", || {
        metric_sum(&service.get("/metrics").map(|(_, b)| b).unwrap_or_default(), "meshguard_catalog_revision", &[("product", PAYMENTS)])
            == 2.0
    });
    send().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !versions().await.iter().any(|v| v == "1.1.0") {
        assert!(Instant::now() < deadline, "no window labelled 1.1.0 within 60 s of the switch: {:?}", versions().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen = versions().await;
    seen.sort();
    assert_eq!(seen, vec!["1.0.0".to_owned(), "1.1.0".to_owned()], "one window per record, each with the version in force");
}
