//! `meshguard serve` end to end: the real binary against the real MongoDB-wire server
//! (FerretDB from `testcontainers/up`), data seeded with the sink's own API, tokens minted here
//! with HMAC-SHA256 independently of the server's code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use meshguard::sink::mongo::{ALERTS, Entry, LineageDoc, MongoSink, QUALITY_METRICS, StoredRecord, USERS};
use mongodb::bson::doc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
const PAYMENTS: &str = "payments-data-product";
const API_KEY: &str = "mk_live_correct-horse-battery-staple";

fn mongodb_uri() -> String {
    std::env::var("MESHGUARD_TEST_MONGODB")
        .unwrap_or_else(|_| panic!("MESHGUARD_TEST_MONGODB is not set: start it with testcontainers/up and `. testcontainers/env`"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An HS256 JWT, minted without the server's code.
fn jwt(secret: &str, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn token_for(user: &str) -> String {
    jwt(SECRET, &json!({"sub": user, "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 3600, "iat": now()}))
}

/// A running `meshguard serve`; killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(database: &str, extra_args: &[&str], env: &[(&str, String)]) -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshguard"));
    let _ = cmd
        .arg("serve")
        .args(extra_args)
        .current_dir(repo())
        .env_remove("MESHGUARD_CONFIG")
        .env("MESHGUARD__API__ADDR", &addr)
        .env("MESHGUARD__MONGODB__URI", mongodb_uri())
        .env("MESHGUARD__MONGODB__DATABASE", database)
        // The end-to-end tests send many requests without valid credentials on purpose.
        .env("MESHGUARD__API__ANONYMOUS_BURST", "100000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        let _ = cmd.env(k, v);
    }
    let mut server = Server { child: cmd.spawn().unwrap(), addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = try_http(&server.addr, "GET", "/healthz", &[], None)
            && r.status == 200
        {
            return server;
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("meshguard serve exited early: {status}");
        }
        assert!(Instant::now() < deadline, "meshguard serve did not answer /healthz within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
fn try_http(addr: &str, method: &str, path: &str, headers: &[(String, String)], body: Option<&[u8]>) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let Some(b) = body {
        // The server may answer (and stop reading) before a too-large body is sent.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: HashMap<String, String> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Ok(Resp { status, headers, body })
}

/// Credentials for a request, and the user the audit should name when they are accepted.
#[derive(Clone)]
struct Cred {
    headers: Vec<(String, String)>,
    user: String,
}

impl Cred {
    fn bearer(token: &str, user: &str) -> Self {
        Self { headers: vec![("Authorization".into(), format!("Bearer {token}"))], user: user.into() }
    }
    fn user(user: &str) -> Self {
        Self::bearer(&token_for(user), user)
    }
    fn none() -> Self {
        Self { headers: vec![], user: "anonymous".into() }
    }
}

/// Requests, with the audit documents they must leave behind.
struct Client {
    addr: String,
    /// (user, product, outcome) → count
    audits: BTreeMap<(String, String, String), u64>,
}

impl Client {
    /// Sends, asserts the status, records the expected audit when `product` is audited.
    fn call(&mut self, cred: &Cred, method: &str, path: &str, body: Option<&[u8]>, expect: u16, audited_product: Option<&str>) -> Resp {
        let r = try_http(&self.addr, method, path, &cred.headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, expect, "{method} {path} as {}: {}", cred.user, r.text());
        if r.status >= 400 {
            let ct = r.headers.get("content-type").cloned().unwrap_or_default();
            assert_eq!(ct, "application/problem+json", "{method} {path}: errors are problem documents");
            let p = r.json();
            assert_eq!(p["status"], json!(r.status), "{p}");
            assert!(p["type"].as_str().unwrap().starts_with("https://meshguard.dev/problems/"), "{p}");
            assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
        }
        if let Some(product) = audited_product {
            // Unknown products and refusals before any authorization (405) are denials too.
            let (user, outcome) = match r.status {
                401 => ("anonymous".to_owned(), "denied"),
                403 | 405 => (cred.user.clone(), "denied"),
                _ if product == "unknown" => (cred.user.clone(), "denied"),
                _ => (cred.user.clone(), "allowed"),
            };
            *self.audits.entry((user, product.to_owned(), outcome.to_owned())).or_default() += 1;
        }
        r
    }
}

/// A payment's latest state, as the test seeded it.
#[derive(Debug, Clone)]
struct Payment {
    id: String,
    amount: i64,
    currency: &'static str,
    status: &'static str,
}

fn payment_json(p: &Payment, customer: i64) -> Value {
    json!({
        "payment_id": p.id, "customer_id": customer, "amount": p.amount, "currency": p.currency, "status": p.status,
        "created_at": "2026-11-29T10:00:00Z", "payment_method": {"type": "CARD", "last_four": "4242"},
    })
}

/// The entry the stream would have made of a record with this lineage (no record body: the
/// key's document gets the lineage, not a version).
fn entry(l: &LineageDoc) -> Entry {
    Entry {
        topic: l.source_topic.clone(),
        partition: l.source_partition,
        offset: l.source_offset,
        timestamp_ms: l.source_timestamp_ms,
        product: l.product.clone(),
        contract: l.contract.clone(),
        contract_version: l.contract_version.clone(),
        record_id: l.record_id.clone(),
        valid: l.outcome == "valid",
        dead_letters: if l.outcome == "valid" { String::new() } else { l.destination_collection.clone() },
        processed_at_ms: 0,
        event_time_ms: None,
        record: None,
    }
}

fn stored(key: &str, record: Value, event_time_ms: i64, offset: i64) -> StoredRecord {
    StoredRecord {
        key: key.into(),
        record,
        event_time_ms: Some(event_time_ms),
        topic: "payments.created".into(),
        partition: 0,
        offset,
        timestamp_ms: Some(1_700_000_000_000),
        contract: "payment-schema".into(),
        contract_version: "1.0.0".into(),
    }
}

/// Seeds users, 30 payments (one with three versions, one that breaks its contract), lineage,
/// alerts and quality windows. Returns the latest state of each valid payment.
async fn seed(sink: &MongoSink, roles: &[String]) -> Vec<Payment> {
    let mut users: Vec<(String, Value)> =
        roles.iter().map(|r| (format!("u-{r}"), json!({"user_id": format!("u-{r}"), "roles": [r]}))).collect();
    users.push(("nobody".into(), json!({"user_id": "nobody", "roles": []})));
    sink.insert_json(USERS, &users).await.unwrap();

    let currencies = ["EUR", "USD", "GBP"];
    let mut latest = Vec::new();
    let mut versions = Vec::new();
    for i in 0..30i64 {
        let id = format!("{}{:06x}-1111-4111-8111-111111111111", if i % 3 == 0 { "3f" } else { "a0" }, i);
        let p = Payment {
            id: id.clone(),
            amount: i * 10,
            currency: currencies[(i % 3) as usize],
            status: if i % 2 == 0 { "COMPLETED" } else { "PENDING" },
        };
        versions.push(stored(&id, payment_json(&p, 1000 + i), 1_700_000_000_000 + i * 1000, 100 + i));
        latest.push(p);
    }
    // Payment 1: an update (newer) and a late older event (higher offset, older event time).
    let p1 = latest[1].clone();
    let updated = Payment { amount: 999, status: "COMPLETED", ..p1.clone() };
    versions.push(stored(&p1.id, payment_json(&updated, 1001), 1_700_000_100_000, 500));
    versions.push(stored(&p1.id, payment_json(&Payment { amount: 5, status: "FAILED", ..p1.clone() }, 1001), 1_700_000_000_500, 600));
    latest[1] = updated;
    // A stored record that no longer satisfies the contract (lowercase currency).
    versions.push(stored("bad-1", json!({"payment_id": "bad-1", "customer_id": 7, "amount": 1, "currency": "eur", "status": "CANCELLED", "created_at": "2026-11-29T10:00:00Z"}), 1_700_000_000_000, 900));
    sink.write_versions(PAYMENTS, &versions).await.unwrap();

    let lineage = |offset: i64, record: &str, product: &str| LineageDoc {
        source_topic: "payments.created".into(),
        source_partition: 0,
        source_offset: offset,
        source_timestamp_ms: Some(1_700_000_000_000),
        product: product.into(),
        contract: "payment-schema".into(),
        contract_version: "1.0.0".into(),
        record_id: Some(record.into()),
        outcome: "valid",
        destination_collection: MongoSink::record_store(product),
        destination_system: "mongodb",
        processed_at: time::OffsetDateTime::now_utc(),
    };
    // Payment 2's lineage is its version's (written above, so this one is a replay); the same id
    // in another product, and a record only that product has.
    sink.write_entries(
        [
            lineage(102, &latest[2].id, PAYMENTS),
            lineage(7002, &latest[2].id, "loans-data-product"),
            lineage(7003, "loan-only-7003", "loans-data-product"),
        ]
        .iter()
        .map(entry)
        .collect(),
    )
    .await
    .unwrap();

    let alert = |id: &str, state: &str, fired: &str| {
        (
            format!("{id}:{state}"),
            json!({"id": id, "state": state, "severity": "critical", "product": PAYMENTS, "contract": "payment-schema",
            "topic": "payments.created", "metric": "completeness", "expected": "100%", "actual": "97%",
            "window_start": fired, "window_end": fired, "fired_at": fired, "resolved_at": if state == "resolved" { json!(fired) } else { Value::Null }}),
        )
    };
    sink.insert_json(
        ALERTS,
        &[
            alert("a-old", "firing", "2026-11-29T09:00:00Z"),
            alert("a-old", "resolved", "2026-11-29T09:05:00Z"),
            alert("a-now", "firing", "2026-11-29T10:00:00Z"),
        ],
    )
    .await
    .unwrap();
    let window = |end: i64, volume: i64| {
        (
            format!("{PAYMENTS}:payment-schema:payments.created:{end}:t"),
            json!({"product": PAYMENTS, "contract": "payment-schema", "topic": "payments.created",
            "window_start": end - 10_000, "window_end": end, "volume": volume, "invalid": 0, "completeness": 1.0, "accuracy": 1.0}),
        )
    };
    sink.insert_json(QUALITY_METRICS, &[window(1_700_000_010_000, 11), window(1_700_000_020_000, 22)]).await.unwrap();
    latest
}

/// `(product, [(role, can_read, can_write)])`.
type Matrix = Vec<(String, Vec<(String, bool, bool)>)>;

/// The access matrix from config/products/*.yaml.
fn access_matrix() -> Matrix {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config/products")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in files {
        let y: Value = serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let name = y["metadata"]["name"].as_str().unwrap().to_owned();
        let rules = y["spec"]["access"].as_array().unwrap().iter().map(|r| {
            let perms: Vec<&str> = r["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            let admin = perms.contains(&"admin");
            (r["role"].as_str().unwrap().to_owned(), admin || perms.contains(&"read"), admin || perms.contains(&"write"))
        });
        out.push((name, rules.collect()));
    }
    out
}

fn search(client: &mut Client, cred: &Cred, path: &str, body: Value) -> Value {
    client.call(cred, "POST", path, Some(body.to_string().as_bytes()), 200, Some(PAYMENTS)).json()
}

fn ids(v: &Value) -> Vec<String> {
    v["results"].as_array().unwrap().iter().map(|r| r["payment_id"].as_str().unwrap().to_owned()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn serve_refuses_to_start_without_credentials() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .arg("serve")
        .current_dir(repo())
        .env_remove("MESHGUARD__AUTH__JWT_HS256_SECRET")
        .env_remove("MESHGUARD__AUTH__API_KEYS")
        .env_remove("MESHGUARD_CONFIG")
        .env("MESHGUARD__API__ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no credentials configured") && stderr.contains("--insecure-dev"), "{stderr}");
    // A short secret is refused too, and never echoed.
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .arg("serve")
        .current_dir(repo())
        .env("MESHGUARD__AUTH__JWT_HS256_SECRET", "tooshort-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("tooshort-secret"));
}

#[test]
fn insecure_dev_mode_serves_only_public_routes_without_a_role() {
    let db = format!("api_dev_{}", uuid::Uuid::new_v4().simple());
    let server = start(&db, &["--insecure-dev"], &[]);
    let mut c = Client { addr: server.addr.clone(), audits: BTreeMap::new() };
    let none = Cred { headers: vec![], user: "dev".into() };
    assert_eq!(c.call(&none, "GET", "/products", None, 200, Some("*")).json()["products"], json!([]));
    let _ = c.call(&none, "GET", "/payments-data-product/alerts", None, 403, Some(PAYMENTS));
    let _ = c.call(&none, "GET", "/openapi.json", None, 200, None);
    let _ = c.call(&none, "GET", "/metrics", None, 200, None);
    drop(server);
    let server = start(&db, &["--insecure-dev", "--dev-role", "payments-team"], &[]);
    c.addr = server.addr.clone();
    let _ = c.call(&none, "GET", "/payments-data-product/alerts", None, 200, Some(PAYMENTS));
    let _ = c.call(&none, "GET", "/loans-data-product/alerts", None, 403, Some("loans-data-product"));
}

#[test]
fn api_end_to_end() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = format!("api_{}", uuid::Uuid::new_v4().simple());
    let matrix = access_matrix();
    let products: Vec<String> = matrix.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(products.len(), 3, "payments, loans, cards");
    let mut roles: Vec<String> = matrix.iter().flat_map(|(_, r)| r.iter().map(|(role, _, _)| role.clone())).collect();
    roles.sort();
    roles.dedup();
    let sink = rt.block_on(MongoSink::connect(&mongodb_uri(), &db, &products)).unwrap();
    let payments = rt.block_on(seed(&sink, &roles));
    let store = MongoSink::record_store(PAYMENTS);
    let store_count = || rt.block_on(sink.count(&store, doc! {})).unwrap();
    let versions_before = store_count();
    assert_eq!(versions_before, 31, "one document per key");

    let digest: [u8; 32] = Sha256::digest(API_KEY.as_bytes()).into();
    let key_hash = hex(&digest);
    let server = start(
        &db,
        &[],
        &[
            ("MESHGUARD__AUTH__JWT_HS256_SECRET", SECRET.to_owned()),
            ("MESHGUARD__AUTH__API_KEYS", format!("[\"u-payments-team:{key_hash}\"]")),
        ],
    );
    let mut c = Client { addr: server.addr.clone(), audits: BTreeMap::new() };

    // --- public routes
    assert_eq!(c.call(&Cred::none(), "GET", "/healthz", None, 200, None).status, 200);
    let doc = c.call(&Cred::none(), "GET", "/openapi.json", None, 200, None).json();
    assert_eq!(doc["openapi"], "3.0.3");
    for route in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/products",
        "/products/{product}",
        "/{product}/data/{record_id}",
        "/{product}/lineage/{record_id}",
        "/payments-data-product/search",
        "/loans-data-product/search",
        "/cards-data-product/search",
        "/{product}/alerts",
        "/{product}/validate",
        "/{product}/graphql",
        "/v1/payments/payments/{payment_id}",
        "/v1/payments/payments/{payment_id}/status",
        "/v1/payments/payments/search",
        "/v1/loans/loans/{loan_id}",
        "/v1/loans/loans/search",
        "/v1/cards/cards/transactions/{transaction_id}",
        "/v1/cards/cards/transactions/search",
    ] {
        assert!(doc["paths"][route].is_object(), "openapi lacks {route}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap().iter().filter(|(m, _)| *m != "parameters") {
            assert!(op["responses"]["200"].is_object(), "{method} {path} documents 200");
            if !["/healthz", "/metrics", "/openapi.json"].contains(&path.as_str()) {
                assert!(op["responses"]["401"].is_object(), "{method} {path} documents 401");
            }
        }
    }

    // --- the authorization matrix: every role of every product × GET/POST × every product
    for role in &roles {
        let cred = Cred::user(&format!("u-{role}"));
        for (product, rules) in &matrix {
            let read = rules.iter().find(|(r, _, _)| r == role).is_some_and(|(_, r, _)| *r);
            let _ = c.call(&cred, "GET", &format!("/{product}/alerts"), None, if read { 200 } else { 403 }, Some(product));
            // Search is a read: it changes nothing.
            let _ = c.call(&cred, "POST", &format!("/{product}/search"), Some(b"{}"), if read { 200 } else { 403 }, Some(product));
            let _ = c.call(&cred, "GET", &format!("/products/{product}"), None, if read { 200 } else { 403 }, Some(product));
        }
        let listed = c.call(&cred, "GET", "/products", None, 200, Some("*")).json();
        let mut names: Vec<String> =
            listed["products"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        let mut expected: Vec<String> =
            matrix.iter().filter(|(_, rules)| rules.iter().any(|(r, read, _)| r == role && *read)).map(|(p, _)| p.clone()).collect();
        expected.sort();
        assert_eq!(names, expected, "/products for {role}");
    }
    // Users with no roles, unknown users, and bad credentials, on every product.
    let expired = Cred::bearer(
        &jwt(SECRET, &json!({"sub": "u-payments-team", "iss": "meshguard", "aud": "datamesh-api", "exp": now() - 3600})),
        "u-payments-team",
    );
    let forged = Cred::bearer(
        &jwt(
            "another-secret-another-secret-another-secret",
            &json!({"sub": "u-payments-team", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 3600}),
        ),
        "u-payments-team",
    );
    let wrong_aud = Cred::bearer(
        &jwt(SECRET, &json!({"sub": "u-payments-team", "iss": "meshguard", "aud": "someone-else", "exp": now() + 3600})),
        "u-payments-team",
    );
    let wrong_iss = Cred::bearer(
        &jwt(SECRET, &json!({"sub": "u-payments-team", "iss": "evil", "aud": "datamesh-api", "exp": now() + 3600})),
        "u-payments-team",
    );
    let alg_none = Cred::bearer(
        &format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD
                .encode(json!({"sub": "u-payments-team", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 3600}).to_string())
        ),
        "x",
    );
    let garbage = Cred::bearer("not-a-jwt", "x");
    let bad_key = Cred { headers: vec![("X-Api-Key".into(), "wrong-key".into())], user: "x".into() };
    let basic = Cred { headers: vec![("Authorization".into(), "Basic dTpw".into())], user: "x".into() };
    for product in &products {
        for (cred, expect) in [
            (Cred::user("nobody"), 403),
            (Cred::user("ghost-never-seen"), 403),
            (Cred::none(), 401),
            (expired.clone(), 401),
            (forged.clone(), 401),
            (wrong_aud.clone(), 401),
            (wrong_iss.clone(), 401),
            (alg_none.clone(), 401),
            (garbage.clone(), 401),
            (bad_key.clone(), 401),
            (basic.clone(), 401),
        ] {
            let r = c.call(&cred, "GET", &format!("/{product}/alerts"), None, expect, Some(product));
            if expect == 401 {
                assert!(r.headers.get("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
            }
            let _ = c.call(&cred, "POST", &format!("/{product}/search"), Some(b"{}"), expect, Some(product));
        }
    }
    let _ = c.call(&Cred::none(), "GET", "/products", None, 401, Some("*"));
    // A made-up product in the URL is audited but never becomes a metric label.
    let _ = c.call(&Cred::none(), "GET", "/evil-label-bomb/alerts", None, 401, Some("unknown"));
    // Roles from the token's claim (no users document), and the API key (roles from `users`).
    let claim = Cred::bearer(
        &jwt(
            SECRET,
            &json!({"sub": "claimant", "iss": "meshguard", "aud": ["x", "datamesh-api"], "exp": now() + 600, "roles": ["fraud-team"]}),
        ),
        "claimant",
    );
    let _ = c.call(&claim, "GET", "/payments-data-product/alerts", None, 200, Some(PAYMENTS));
    let _ = c.call(&claim, "POST", "/payments-data-product/search", Some(b"{}"), 200, Some(PAYMENTS));
    let _ = c.call(&claim, "GET", "/loans-data-product/alerts", None, 403, Some("loans-data-product"));
    let key = Cred { headers: vec![("X-Api-Key".into(), API_KEY.into())], user: "u-payments-team".into() };
    let _ = c.call(&key, "POST", "/payments-data-product/search", Some(b"{}"), 200, Some(PAYMENTS));
    let _ = c.call(&key, "GET", "/cards-data-product/alerts", None, 403, Some("cards-data-product"));

    // --- routes, as payments-team
    let team = Cred::user("u-payments-team");
    let _ = c.call(&team, "GET", "/no-such-product/alerts", None, 404, Some("unknown"));
    let _ = c.call(&team, "GET", "/products/no-such-product", None, 404, Some("unknown"));
    let _ = c.call(&team, "GET", "/no/such/route/at/all", None, 404, Some("unknown"));
    let detail = c.call(&team, "GET", "/products/payments-data-product", None, 200, Some(PAYMENTS)).json();
    assert_eq!(detail["declaration"]["metadata"]["name"], PAYMENTS);
    assert_eq!(detail["contracts"][0]["name"], "payment-schema");
    assert_eq!(detail["contracts"][0]["sla"]["freshness"], "1s");
    let quality = detail["quality"].as_array().unwrap();
    assert_eq!(quality.len(), 1, "{quality:?}");
    assert_eq!(quality[0]["volume"], 22, "the latest window of the topic");

    let p1 = &payments[1];
    let rec = c.call(&team, "GET", &format!("/payments-data-product/data/{}", p1.id), None, 200, Some(PAYMENTS)).json();
    assert_eq!(rec["amount"], 999, "the newest version by event time wins: {rec}");
    assert_eq!(rec["status"], "COMPLETED");
    assert_eq!(rec["_meta"]["offset"], 500);
    assert!(rec.get("_id").is_none() && rec.get("key").is_none(), "{rec}");
    let _ = c.call(&team, "GET", "/payments-data-product/data/does-not-exist", None, 404, Some(PAYMENTS));
    let bad = c.call(&team, "GET", "/payments-data-product/data/bad-1", None, 500, Some(PAYMENTS)).json();
    assert_eq!(bad["type"], "https://meshguard.dev/problems/contract-violation");
    assert!(bad["violations"].as_array().unwrap().iter().any(|v| v["path"] == "/currency"), "{bad}");

    // Aliases from spec.apis.rest.endpoints.
    let alias = c.call(&team, "GET", &format!("/v1/payments/payments/{}", p1.id), None, 200, Some(PAYMENTS)).json();
    assert_eq!(alias, rec);
    let status = c.call(&team, "GET", &format!("/v1/payments/payments/{}/status", p1.id), None, 200, Some(PAYMENTS)).json();
    assert_eq!(status, json!({"payment_id": p1.id, "status": "COMPLETED"}));
    let _ = c.call(&Cred::user("u-loans-team"), "GET", &format!("/v1/payments/payments/{}", p1.id), None, 403, Some(PAYMENTS));
    let _ = c.call(&Cred::none(), "GET", &format!("/v1/payments/payments/{}/status", p1.id), None, 401, Some(PAYMENTS));
    let via_alias = search(
        &mut c,
        &team,
        "/v1/payments/payments/search",
        json!({"filter": {"field": "currency", "op": "eq", "value": "GBP"}, "limit": 500}),
    );
    // `/v1/cards/cards/transactions/search` also matches `…/{transaction_id}`: POST is the search.
    let cards = Cred::user("u-cards-team");
    let r = c.call(&cards, "POST", "/v1/cards/cards/transactions/search", Some(b"{}"), 200, Some("cards-data-product")).json();
    assert_eq!(r["count"], 0);
    let r = c.call(&cards, "GET", "/v1/cards/cards/transactions/search", None, 405, Some("unknown"));
    assert_eq!(r.headers.get("allow").map(String::as_str), Some("POST"), "the concrete path wins over the templated one");
    let r = c.call(&cards, "PUT", "/v1/cards/cards/transactions/x", None, 405, Some("unknown"));
    assert_eq!(r.headers.get("allow").map(String::as_str), Some("GET,HEAD"));

    let gbp: Vec<String> = payments.iter().filter(|p| p.currency == "GBP").map(|p| p.id.clone()).collect();
    assert_eq!(sorted(ids(&via_alias)), sorted(gbp));

    // Lineage (the seed's getDataLineage).
    let lin = c.call(&team, "GET", &format!("/payments-data-product/lineage/{}", payments[2].id), None, 200, Some(PAYMENTS)).json();
    let events: Vec<&Value> = lin["upstream"].as_array().unwrap().iter().filter(|u| u["kind"] == "event").collect();
    assert_eq!(events.len(), 1, "only this product's versions: {lin}");
    assert_eq!(events[0]["lineage_id"], "payments.created/0/102/1700000000000");
    // A record only another product has: not shown, and not even revealed to exist.
    let _ = c.call(&team, "GET", "/payments-data-product/lineage/loan-only-7003", None, 404, Some(PAYMENTS));
    let _ = c.call(&team, "GET", "/payments-data-product/lineage/nothing-here", None, 404, Some(PAYMENTS));

    // Alerts: a-now fires; a-old resolved.
    let alerts = c.call(&team, "GET", "/payments-data-product/alerts?limit=2", None, 200, Some(PAYMENTS)).json();
    let firing: Vec<&str> = alerts["firing"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(firing, vec!["a-now"]);
    assert_eq!(alerts["recent"].as_array().unwrap().len(), 2);
    assert_eq!(alerts["recent"][0]["id"], "a-now");
    let _ = c.call(&team, "GET", "/payments-data-product/alerts?limit=100000", None, 400, Some(PAYMENTS));

    // GraphQL schema.
    let g = c.call(&team, "GET", "/payments-data-product/graphql", None, 200, Some(PAYMENTS));
    assert!(g.text().contains("type Payment"), "{}", g.text());
    let _ = c.call(&Cred::user("u-loans-team"), "GET", "/loans-data-product/graphql", None, 404, Some("loans-data-product"));

    // --- search on seeded data
    let p = "/payments-data-product/search";
    let completed =
        search(&mut c, &team, p, json!({"filter": {"and": [{"field": "status", "op": "eq", "value": "COMPLETED"}]}, "limit": 500}));
    let want: Vec<String> = payments.iter().filter(|x| x.status == "COMPLETED").map(|x| x.id.clone()).collect();
    assert_eq!(sorted(ids(&completed)), sorted(want.clone()), "latest versions only (payment 1 is COMPLETED now)");
    let pending = search(&mut c, &team, p, json!({"filter": {"field": "status", "op": "eq", "value": "PENDING"}, "limit": 500}));
    assert!(!ids(&pending).contains(&p1.id), "an older version that matches does not make the record match");
    let failed = search(&mut c, &team, p, json!({"filter": {"field": "status", "op": "eq", "value": "FAILED"}}));
    assert_eq!(failed["count"], 0, "the late older event is not the latest: {failed}");
    let range = search(
        &mut c,
        &team,
        p,
        json!({"filter": {"and": [{"field": "amount", "op": "gte", "value": 100}, {"field": "amount", "op": "lt", "value": 200.5}]}, "limit": 500}),
    );
    let want: Vec<String> = payments.iter().filter(|x| x.amount >= 100 && (x.amount as f64) < 200.5).map(|x| x.id.clone()).collect();
    assert_eq!(sorted(ids(&range)), sorted(want));
    let within = search(
        &mut c,
        &team,
        p,
        json!({"filter": {"and": [{"field": "currency", "op": "in", "value": ["EUR", "USD"]}, {"field": "status", "op": "ne", "value": "PENDING"}]}, "limit": 500}),
    );
    let want: Vec<String> =
        payments.iter().filter(|x| (x.currency == "EUR" || x.currency == "USD") && x.status != "PENDING").map(|x| x.id.clone()).collect();
    assert_eq!(sorted(ids(&within)), sorted(want));
    let prefix = search(&mut c, &team, p, json!({"filter": {"field": "payment_id", "op": "prefix", "value": "3f"}, "limit": 500}));
    let want: Vec<String> = payments.iter().filter(|x| x.id.starts_with("3f")).map(|x| x.id.clone()).collect();
    assert_eq!(sorted(ids(&prefix)), sorted(want));
    let literal = search(&mut c, &team, p, json!({"filter": {"field": "payment_id", "op": "prefix", "value": ".*"}}));
    assert_eq!(literal["count"], 0, "prefix is a literal, not a regex");
    let contains = search(&mut c, &team, p, json!({"filter": {"field": "payment_id", "op": "contains", "value": "00001d-"}}));
    assert_eq!(ids(&contains), vec![payments[0x1d].id.clone()]);
    // Conditions on the key read by `_id` (an `eq`, a prefix as a range of the `_id` index); the
    // other conditions, the sort and the page still apply. The README's search has this shape.
    let one = search(
        &mut c,
        &team,
        p,
        json!({"filter": {"and": [{"field": "payment_id", "op": "eq", "value": payments[4].id}, {"field": "status", "op": "eq", "value": "COMPLETED"}]}}),
    );
    assert_eq!(ids(&one), vec![payments[4].id.clone()]);
    let none = search(
        &mut c,
        &team,
        p,
        json!({"filter": {"and": [{"field": "payment_id", "op": "eq", "value": payments[5].id}, {"field": "status", "op": "eq", "value": "COMPLETED"}]}}),
    );
    assert_eq!(none["count"], 0, "payment 5 is PENDING: {none}");
    let readme = search(
        &mut c,
        &team,
        p,
        json!({"filter": {"and": [{"field": "payment_id", "op": "prefix", "value": "3f"}, {"field": "status", "op": "eq", "value": "COMPLETED"}]},
               "sort": {"field": "amount", "order": "desc"}, "limit": 3}),
    );
    let mut want: Vec<&Payment> = payments.iter().filter(|x| x.id.starts_with("3f") && x.status == "COMPLETED").collect();
    want.sort_by_key(|x| std::cmp::Reverse(x.amount));
    assert_eq!(ids(&readme), want.iter().take(3).map(|x| x.id.clone()).collect::<Vec<_>>());
    assert!(readme["next_cursor"].is_string(), "{} match: {readme}", want.len());
    let explain = rt.block_on(async {
        let client = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap();
        let filter = doc! { "_id": { "$regex": "^3f" }, "$and": [{ "status": { "$eq": "COMPLETED" } }] };
        client.database(&db).run_command(doc! { "explain": { "find": &store, "filter": filter } }).await.unwrap()
    });
    assert!(
        explain.get_bool("filterPushdown").is_ok_and(|b| b),
        "FerretDB reads a key prefix from the _id index (testcontainers/ferretdb/patches/id-prefix.patch; \
         a FerretDB built before it: testcontainers/down ferretdb && testcontainers/up): {explain}"
    );
    let top = search(&mut c, &team, p, json!({"sort": {"field": "amount", "order": "desc"}, "limit": 5}));
    let mut by_amount = payments.clone();
    by_amount.sort_by_key(|x| std::cmp::Reverse(x.amount));
    assert_eq!(ids(&top), by_amount.iter().take(5).map(|x| x.id.clone()).collect::<Vec<_>>());
    assert!(top["next_cursor"].is_string());
    // Pagination: pages of 7 over COMPLETED by amount ascending.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..10 {
        let mut body = json!({"filter": {"field": "status", "op": "eq", "value": "COMPLETED"}, "sort": {"field": "amount"}, "limit": 7});
        if !cursor.is_null() {
            body["cursor"] = cursor.clone();
        }
        let page = search(&mut c, &team, p, body);
        assert!(page["count"].as_u64().unwrap() <= 7);
        seen.extend(ids(&page));
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    let mut want: Vec<&Payment> = payments.iter().filter(|x| x.status == "COMPLETED").collect();
    want.sort_by_key(|x| x.amount);
    assert_eq!(seen, want.iter().map(|x| x.id.clone()).collect::<Vec<_>>(), "pages in order, no gap, no duplicate");

    // --- injection attempts and bad input: 400 naming the field, nothing changed
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!("{{\"filter\":{}1{}}}", "{\"and\":[".repeat(5_000), "]}".repeat(5_000));
    let huge = format!("{{\"filter\":{{\"field\":\"currency\",\"op\":\"eq\",\"value\":\"{}\"}}}}", "A".repeat(70 * 1024));
    let too_many =
        json!({"filter": {"and": (0..21).map(|_| json!({"field": "amount", "op": "gt", "value": 1})).collect::<Vec<_>>()}}).to_string();
    let cases: Vec<(String, Option<&str>)> = vec![
        (json!({"filter": {"$where": "1"}}).to_string(), Some("filter.$where")),
        (json!({"filter": {"field": "amount", "op": "$ne", "value": 1}}).to_string(), Some("filter.op")),
        (json!({"filter": {"field": "payment_id", "op": "eq", "value": {"$gt": ""}}}).to_string(), Some("filter.value.$gt")),
        (json!({"filter": {"field": "payment_id", "op": "eq", "value": {"x": 1}}}).to_string(), Some("filter.value")),
        (json!({"filter": {"field": "$where", "op": "eq", "value": 1}}).to_string(), Some("filter.field")),
        (json!({"filter": {"field": "_meta.offset", "op": "gt", "value": 1}}).to_string(), Some("filter.field")),
        (json!({"filter": {"field": "nope", "op": "eq", "value": 1}}).to_string(), Some("filter.field")),
        (json!({"filter": {"field": "amount", "op": "eq", "value": "100"}}).to_string(), Some("filter.value")),
        (json!({"filter": {"field": "customer_id", "op": "eq", "value": 1.5}}).to_string(), Some("filter.value")),
        (json!({"filter": {"field": "status", "op": "eq", "value": "HACKED"}}).to_string(), Some("filter.value")),
        (json!({"filter": {"field": "amount", "op": "prefix", "value": "1"}}).to_string(), Some("filter.op")),
        (json!({"filter": {"field": "currency", "op": "in", "value": "EUR"}}).to_string(), Some("filter.value")),
        (json!({"filter": {"and": [{"field": "amount", "op": "gt", "value": 1, "extra": true}]}}).to_string(), Some("filter.and[0].extra")),
        (json!({"filter": {"or": []}}).to_string(), Some("filter.or")),
        (json!({"filter": {"and": [{"and": []}]}}).to_string(), Some("filter.and[0].and")),
        (json!({"limit": 100000}).to_string(), Some("limit")),
        (json!({"limit": 0}).to_string(), Some("limit")),
        (json!({"sort": {"field": "payment_method"}}).to_string(), Some("sort.field")),
        (json!({"cursor": "bm90LWEtY3Vyc29y"}).to_string(), Some("cursor")),
        (json!({"cursor": ""}).to_string(), Some("cursor")),
        (json!({"cursor": null}).to_string(), Some("cursor")),
        (json!({"limit": null}).to_string(), Some("limit")),
        (json!({"query": "x"}).to_string(), Some("query")),
        (too_many, Some("filter.and")),
        ("{not json".into(), Some("body")),
        (deep, Some("body")),
        (deep_obj, Some("body")),
        (huge, Some("body")),
    ];
    for (body, field) in &cases {
        let r = c.call(&team, "POST", p, Some(body.as_bytes()), 400, Some(PAYMENTS)).json();
        assert_eq!(r["type"], "https://meshguard.dev/problems/invalid-request");
        if let Some(f) = field {
            assert_eq!(r["errors"][0]["field"], *f, "{r}");
        }
    }
    assert_eq!(store_count(), versions_before, "the record store is unchanged");
    assert_eq!(rt.block_on(sink.count(USERS, doc! {})).unwrap(), roles.len() as u64 + 1, "users unchanged");
    // A read-only role may search, with the same typed language; a role without read may not
    // even reach the parser.
    let _ = c.call(&Cred::user("u-fraud-team"), "POST", p, Some(br#"{"filter":{"$where":"1"}}"#), 400, Some(PAYMENTS));
    let _ = c.call(&Cred::user("u-loans-team"), "POST", p, Some(br#"{"filter":{"$where":"1"}}"#), 403, Some(PAYMENTS));
    let via_alias =
        c.call(&Cred::user("u-analytics-team"), "POST", "/v1/payments/payments/search", Some(b"{}"), 200, Some(PAYMENTS)).json();
    assert!(via_alias["count"].as_u64().unwrap() > 0, "{via_alias}");

    // --- metrics
    let m = c.call(&Cred::none(), "GET", "/metrics", None, 200, None).text();
    assert!(m.contains("meshguard_api_requests_total{"), "{m}");
    assert!(m.contains("route=\"/{product}/search\""), "route templates, never ids");
    assert!(m.contains("meshguard_api_request_seconds"), "{m}");
    assert!(m.contains("meshguard_access_denials_total{") && m.contains("role=\"fraud-team\""), "{m}");
    assert!(!m.contains(&p1.id), "no record id in labels");
    promtool_check_metrics(&m);
    assert!(!m.contains("evil-label-bomb") && m.contains("product=\"unknown\""), "unknown products share one label");

    // --- every decision was audited
    let audit = rt.block_on(async { sink.database().collection::<bson::Document>("access_audit").count_documents(doc! {}).await }).unwrap();
    let mut total = 0;
    for ((user, product, outcome), n) in &c.audits {
        let got = rt.block_on(sink.count("access_audit", doc! { "user": user, "product": product, "outcome": outcome })).unwrap();
        assert_eq!(got, *n, "audit documents for {user} on {product}: {outcome}");
        total += n;
    }
    assert_eq!(audit, total, "no unexpected audit documents");
    let one = rt
        .block_on(async {
            sink.database()
                .collection::<bson::Document>("access_audit")
                .find_one(doc! { "user": "u-fraud-team", "outcome": "denied" })
                .await
        })
        .unwrap()
        .unwrap();
    for field in ["_id", "at", "user", "product", "method", "route", "path", "status", "client", "permission", "outcome", "reason"] {
        assert!(one.contains_key(field), "audit documents carry {field}: {one}");
    }
    assert!(!format!("{one}").contains(SECRET));
    assert_eq!(one.get_i32("status").unwrap(), 403, "{one}");
    // The record a request was about, the path as received and the status answered.
    let about = |filter: bson::Document| {
        rt.block_on(async { sink.database().collection::<bson::Document>("access_audit").find_one(filter).await })
            .unwrap()
            .unwrap_or_else(|| panic!("no audit document"))
    };
    let read = about(doc! { "record_id": p1.id.as_str(), "route": "/{product}/data/{record_id}" });
    assert_eq!(read.get_i32("status").unwrap(), 200, "{read}");
    assert_eq!(read.get_str("path").unwrap(), format!("/payments-data-product/data/{}", p1.id));
    let refused = about(doc! { "path": "/v1/cards/cards/transactions/x", "method": "PUT" });
    assert_eq!(refused.get_i32("status").unwrap(), 405, "{refused}");
    assert_eq!(refused.get_str("user").unwrap(), "u-cards-team", "{refused}");
    let lost = about(doc! { "path": "/no-such-product/alerts" });
    assert_eq!((lost.get_i32("status").unwrap(), lost.get_str("product").unwrap()), (404, "unknown"), "{lost}");
    assert_eq!(lost.get_str("requested_product").unwrap(), "no-such-product", "{lost}");
    drop(server);
}

/// `promtool check metrics` (Debian package `prometheus`) must accept a scrape.
fn promtool_check_metrics(scrape: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool is not installed ({e}): apt-get install prometheus"));
    child.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh database name for one test.
fn fresh_db(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn secret_env() -> Vec<(&'static str, String)> {
    vec![("MESHGUARD__AUTH__JWT_HS256_SECRET", SECRET.to_owned())]
}

/// The audit documents of `database`.
fn audit_docs(rt: &tokio::runtime::Runtime, database: &str) -> Vec<bson::Document> {
    rt.block_on(async {
        let client = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap();
        let mut cursor = client.database(database).collection::<bson::Document>("access_audit").find(doc! {}).await.unwrap();
        let mut out = Vec::new();
        while cursor.advance().await.unwrap() {
            out.push(cursor.deserialize_current().unwrap());
        }
        out
    })
}

/// Reads until the server closes the connection; `None` when the read timed out instead (the
/// server kept the connection open).
fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => Some(buf),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => Some(buf),
        Err(_) => None,
    }
}

/// Opens a connection and has one request served on it, so it is surely accepted and kept alive.
fn kept_alive(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    s
}

/// Slow clients: clients that never finish their headers, and a kept-alive connection left
/// idle, are closed by the server (`api.header_read_timeout_ms`), whatever they send or not.
#[test]
fn slow_and_idle_clients_are_disconnected() {
    let mut env = secret_env();
    env.push(("MESHGUARD__API__HEADER_READ_TIMEOUT_MS", "500".into()));
    let server = start(&fresh_db("api_slow"), &[], &env);
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /payments-data-product/alerts HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
            }
            s
        })
        .collect();
    let mut idle = kept_alive(&server.addr);
    // The bound only tells a close from a connection held open indefinitely.
    for s in &mut slow {
        let got = read_until_closed(s, Duration::from_secs(60)).expect("a client that never finishes its headers is disconnected");
        assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "nothing was served to it");
    }
    assert!(read_until_closed(&mut idle, Duration::from_secs(60)).is_some(), "an idle kept-alive connection is closed");
    assert_eq!(try_http(&server.addr, "GET", "/healthz", &[], None).unwrap().status, 200);
}

/// Connections over `api.max_connections` are answered 503 at once and closed; when one of the
/// open connections goes, the server accepts again.
#[test]
fn connections_over_the_cap_are_refused() {
    let mut env = secret_env();
    env.push(("MESHGUARD__API__MAX_CONNECTIONS", "3".into()));
    env.push(("MESHGUARD__API__HEADER_READ_TIMEOUT_MS", "3600000".into()));
    let server = start(&fresh_db("api_cap"), &[], &env);
    // `start` polled /healthz on connections of its own; they close as their responses end.
    let mut open: Vec<TcpStream> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while open.len() < 3 {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        if &head == b"HTTP/1.1 200" {
            open.push(s);
        }
        assert!(Instant::now() < deadline, "three connections were never open together");
    }
    let mut over = TcpStream::connect(&server.addr).unwrap();
    let refused = read_until_closed(&mut over, Duration::from_secs(60)).expect("the connection over the cap is answered and closed");
    let refused = String::from_utf8_lossy(&refused).into_owned();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("application/problem+json") && refused.contains("overloaded"), "{refused}");
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_http(&server.addr, "GET", "/healthz", &[], None) {
            Ok(r) if r.status == 200 => break,
            other => assert!(Instant::now() < deadline, "the server did not accept again: {:?}", other.map(|r| r.status)),
        }
    }
}

/// A flood without valid credentials, with a 60 KB product segment holding newlines: each
/// audit document stays small and escaped, and beyond the per-address burst the requests get
/// 429 and only the first of them is audited. Valid credentials are not limited.
#[test]
fn anonymous_floods_are_limited_and_audited_bounded() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = fresh_db("api_flood");
    let mut env = secret_env();
    env.push(("MESHGUARD__API__ANONYMOUS_BURST", "3".into()));
    env.push(("MESHGUARD__API__ANONYMOUS_PER_SECOND", "0".into()));
    let server = start(&db, &[], &env);
    let segment = format!("evil%0Aline%0D{}", "A".repeat(60 * 1024));
    let path = format!("/{segment}/alerts");
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(try_http(&server.addr, "GET", &path, &[], None).unwrap().status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429, 429, 429]);
    let with_token = try_http(&server.addr, "GET", "/products", &[("Authorization".into(), format!("Bearer {}", token_for("u-x")))], None);
    assert_eq!(with_token.unwrap().status, 200, "callers with valid credentials are not limited");

    let docs = audit_docs(&rt, &db);
    let anonymous: Vec<&bson::Document> = docs.iter().filter(|d| d.get_str("user").ok() == Some("anonymous")).collect();
    assert_eq!(anonymous.len(), 4, "three 401s and the first 429: {anonymous:?}");
    assert_eq!(anonymous.iter().filter(|d| d.get_i32("status").ok() == Some(429)).count(), 1);
    for d in &anonymous {
        assert_eq!(d.get_str("product").unwrap(), "unknown");
        let requested = d.get_str("requested_product").unwrap();
        assert!(requested.starts_with("evil\\nline\\r"), "newlines are escaped: {requested:.80}");
        assert!(!requested.contains('\n') && !requested.contains('\r'));
        let size = d.to_vec().unwrap().len();
        assert!(size < 4096, "an audit document of {size} bytes for a 60 KB request");
    }
}

/// Authenticated refusals before any handler decision are audited with their status and path.
#[test]
fn early_refusals_are_audited() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = fresh_db("api_early");
    let server = start(&db, &[], &secret_env());
    let auth = vec![("Authorization".to_owned(), format!("Bearer {}", token_for("u-payments-team")))];
    assert_eq!(try_http(&server.addr, "POST", "/payments-data-product/alerts", &auth, Some(b"{}")).unwrap().status, 405);
    assert_eq!(try_http(&server.addr, "GET", "/nope/data/r-1", &auth, None).unwrap().status, 404);
    assert_eq!(try_http(&server.addr, "GET", "/payments-data-product/data/r-1/", &auth, None).unwrap().status, 404);
    let docs = audit_docs(&rt, &db);
    let find =
        |path: &str| docs.iter().find(|d| d.get_str("path").ok() == Some(path)).unwrap_or_else(|| panic!("no audit of {path}: {docs:?}"));
    let d = find("/payments-data-product/alerts");
    assert_eq!((d.get_i32("status").unwrap(), d.get_str("method").unwrap(), d.get_str("outcome").unwrap()), (405, "POST", "denied"));
    assert_eq!((d.get_str("user").unwrap(), d.get_str("product").unwrap()), ("u-payments-team", PAYMENTS));
    let d = find("/nope/data/r-1");
    assert_eq!((d.get_i32("status").unwrap(), d.get_str("product").unwrap(), d.get_str("record_id").unwrap()), (404, "unknown", "r-1"));
    assert_eq!(d.get_str("user").unwrap(), "u-payments-team");
    let d = find("/payments-data-product/data/r-1/");
    assert_eq!(d.get_i32("status").unwrap(), 404);
    assert_eq!(docs.len(), 3, "{docs:?}");
}

/// An HS256 token with a header and a signature of its own choosing.
fn jwt_with_header(header: &Value, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap());
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// RFC 7515 `crit` with an extension the server does not know: 401. Two `Authorization` or two
/// `X-Api-Key` headers: 401, whichever is valid. An `exp` at the end of time is accepted (no
/// overflow in the leeway).
#[test]
fn odd_credentials_are_refused_and_far_expiries_accepted() {
    let digest: [u8; 32] = Sha256::digest(API_KEY.as_bytes()).into();
    let mut env = secret_env();
    env.push(("MESHGUARD__AUTH__API_KEYS", format!("[\"u-payments-team:{}\"]", hex(&digest))));
    let server = start(&fresh_db("api_creds"), &[], &env);
    let claims = json!({"sub": "u-x", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 600, "roles": ["payments-team"]});
    let get =
        |headers: Vec<(String, String)>| try_http(&server.addr, "GET", "/payments-data-product/alerts", &headers, None).unwrap().status;
    let bearer = |t: &str| ("Authorization".to_owned(), format!("Bearer {t}"));
    let plain = jwt_with_header(&json!({"alg": "HS256", "typ": "JWT"}), &claims);
    assert_eq!(get(vec![bearer(&plain)]), 200, "the control token is accepted");
    let crit = jwt_with_header(&json!({"alg": "HS256", "typ": "JWT", "crit": ["x-unknown"], "x-unknown": true}), &claims);
    assert_eq!(get(vec![bearer(&crit)]), 401);
    assert_eq!(get(vec![bearer(&plain), bearer(&plain)]), 401, "a repeated Authorization header");
    let key = ("X-Api-Key".to_owned(), API_KEY.to_owned());
    assert_eq!(get(vec![key.clone()]), 403, "the control key is accepted (its user has no role in this database)");
    assert_eq!(get(vec![key.clone(), key.clone()]), 401, "a repeated X-Api-Key header");
    // `meshguard token` (README section 4) mints what the server accepts.
    let minted = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args(["token", "--sub", "alice", "--role", "payments-team"])
        .current_dir(repo())
        .env_remove("MESHGUARD_CONFIG")
        .env("MESHGUARD__AUTH__JWT_HS256_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    assert_eq!(get(vec![bearer(String::from_utf8_lossy(&minted.stdout).trim())]), 200);
    let mut forever = claims.clone();
    forever["exp"] = json!(i64::MAX);
    assert_eq!(get(vec![bearer(&jwt_with_header(&json!({"alg": "HS256"}), &forever))]), 200);
    let mut not_yet = claims.clone();
    not_yet["nbf"] = json!(i64::MAX);
    assert_eq!(get(vec![bearer(&jwt_with_header(&json!({"alg": "HS256"}), &not_yet))]), 401);
}

/// The aliases answer under the path of `apis.rest.baseUrl`, on the decoded path like the main
/// routes, and refuse `//` and a trailing slash like them.
#[test]
fn aliases_match_the_decoded_path_strictly() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = fresh_db("api_alias");
    let sink = rt.block_on(MongoSink::connect(&mongodb_uri(), &db, &[PAYMENTS.to_owned()])).unwrap();
    let p = Payment { id: "3f000001-1111-4111-8111-111111111111".into(), amount: 10, currency: "EUR", status: "PENDING" };
    rt.block_on(sink.write_versions(PAYMENTS, &[stored("k 1", payment_json(&p, 1), 1_700_000_000_000, 1)])).unwrap();
    let server = start(&db, &[], &secret_env());
    let auth = vec![(
        "Authorization".to_owned(),
        format!(
            "Bearer {}",
            jwt(SECRET, &json!({"sub": "t", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 600, "roles": ["payments-team"]}))
        ),
    )];
    let get = |path: &str| try_http(&server.addr, "GET", path, &auth, None).unwrap();
    let main = get("/payments-data-product/data/k%201");
    assert_eq!(main.status, 200, "{}", main.text());
    let alias = get("/v1/payments/payments/k%201");
    assert_eq!(alias.status, 200, "{}", alias.text());
    assert_eq!(alias.json(), main.json());
    assert_eq!(get("/v1/payments/payments/k%201/status").json(), json!({"payment_id": "k 1", "status": "PENDING"}));
    // The prefix is `apis.rest.baseUrl`'s path (https://api.banking.com/v1/payments), decoded
    // like the rest of the path.
    let encoded = get("/%761/payments/payments/k%201");
    assert_eq!(encoded.status, 200, "{}", encoded.text());
    assert_eq!(encoded.json(), main.json());
    for path in [
        "/payments/k%201",
        "/v1/payments/k%201",
        "/v1%2Fpayments/payments/k%201",
        "/v1/payments//payments/k%201",
        "/v1//payments/payments/k%201",
        "/v1/payments/payments/k%201/status/",
    ] {
        assert_eq!(get(path).status, 404, "{path}");
    }
    for path in [
        "/payments-data-product/data/k%201/",
        "/payments-data-product//data/k%201",
        "/v1/payments/payments/k%201/",
        "/v1/payments/payments//k%201",
        "//v1/payments/payments/k%201",
        "/v1/payments/payments/k%201/status/",
    ] {
        assert_eq!(get(path).status, 404, "{path}");
    }
}

/// SIGTERM while one client holds a half-sent request open and another is half-way through its
/// headers: `serve` still exits, once `api.shutdown_timeout_ms` has passed.
#[test]
fn sigterm_ends_serve_despite_a_half_sent_request() {
    let mut env = secret_env();
    env.push(("MESHGUARD__API__SHUTDOWN_TIMEOUT_MS", "500".into()));
    env.push(("MESHGUARD__API__REQUEST_TIMEOUT_MS", "3600000".into()));
    env.push(("MESHGUARD__API__HEADER_READ_TIMEOUT_MS", "3600000".into()));
    let mut server = start(&fresh_db("api_term"), &[], &env);
    let mut held = kept_alive(&server.addr);
    let token = token_for("u-payments-team");
    held.write_all(
        format!("POST /payments-data-product/search HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"limit\":").as_bytes(),
    )
    .unwrap();
    let mut half_headers = TcpStream::connect(&server.addr).unwrap();
    half_headers.write_all(b"GET /products HTTP/1.1\r\nHost: x\r\n").unwrap();
    let status = Command::new("kill").arg("-TERM").arg(server.child.id().to_string()).status().unwrap();
    assert!(status.success());
    // The bound only tells an exit from a hang.
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "serve is still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(read_until_closed(&mut held, Duration::from_secs(10)).is_some(), "the held connection was closed");
}

/// `/metrics` and `/openapi.json` are public on the API port by default; with `api.ops_addr`
/// they are served there only.
#[test]
fn ops_endpoints_move_to_their_own_address() {
    let ops = format!("127.0.0.1:{}", free_port());
    let mut env = secret_env();
    env.push(("MESHGUARD__API__OPS_ADDR", ops.clone()));
    let server = start(&fresh_db("api_ops"), &[], &env);
    for path in ["/metrics", "/openapi.json"] {
        assert_eq!(try_http(&server.addr, "GET", path, &[], None).unwrap().status, 401, "{path} is not public on the API port");
        assert_eq!(try_http(&ops, "GET", path, &[], None).unwrap().status, 200, "{path} on the ops address");
    }
    assert_eq!(try_http(&server.addr, "GET", "/healthz", &[], None).unwrap().status, 200);
    assert_eq!(try_http(&ops, "GET", "/healthz", &[], None).unwrap().status, 200);
}

/// A key pair made by `openssl` (independently of the server's code) for RS256 or ES256.
struct KeyPair {
    /// PKCS#8 private key PEM, to sign with.
    private: Vec<u8>,
    /// SubjectPublicKeyInfo PEM, as an identity provider publishes it.
    public: Vec<u8>,
    /// The public key as a JWK (without `kid`).
    jwk: Value,
    alg: jsonwebtoken::Algorithm,
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl is not installed ({e}): apt-get install openssl"));
    let mut stdin = child.stdin.take().unwrap();
    if let Some(bytes) = input {
        stdin.write_all(bytes).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn rsa_pair() -> KeyPair {
    let private = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], None);
    let public = openssl(&["pkey", "-pubout"], Some(&private));
    let modulus = String::from_utf8(openssl(&["rsa", "-noout", "-modulus"], Some(&private))).unwrap();
    let n = from_hex(modulus.trim().trim_start_matches("Modulus="));
    let jwk = json!({"kty": "RSA", "use": "sig", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"});
    KeyPair { private, public, jwk, alg: jsonwebtoken::Algorithm::RS256 }
}

fn ec_pair() -> KeyPair {
    let private = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], None);
    let public = openssl(&["pkey", "-pubout"], Some(&private));
    let der = openssl(&["pkey", "-pubout", "-outform", "DER"], Some(&private));
    // The DER ends with the uncompressed point 0x04 || x || y.
    let point = &der[der.len() - 65..];
    assert_eq!(point[0], 4);
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
    KeyPair { private, public, jwk, alg: jsonwebtoken::Algorithm::ES256 }
}

impl KeyPair {
    fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        let key = match self.alg {
            jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&self.private),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&self.private),
        };
        jsonwebtoken::encode(&header, claims, &key.unwrap()).unwrap()
    }

    fn jwk_with(&self, kid: &str) -> Value {
        let mut j = self.jwk.clone();
        j["kid"] = json!(kid);
        j
    }
}

/// A JWKS endpoint on 127.0.0.1 serving whatever set the test puts in `keys`, counting fetches.
struct JwksServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    fn start(keys: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let keys = std::sync::Arc::new(std::sync::Mutex::new(keys));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let _ = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = json!({"keys": k.lock().unwrap().clone()}).to_string();
                let _ = f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self { url, keys, fetches }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn idp_claims(exp_from_now: i64) -> Value {
    json!({"sub": "idp-user", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + exp_from_now, "roles": ["payments-team"]})
}

/// RS256 and ES256 tokens verified with keys from a PEM file: accepted when signed by the key,
/// refused when expired, signed by another key, of the other family, or HS256 "signed" with the
/// public key (algorithm confusion).
#[test]
fn rs256_and_es256_tokens_with_a_pem_key() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = rsa_pair();
    let ec = ec_pair();
    let other = rsa_pair();
    for (pair, wrong_family) in [(&rsa, &ec), (&ec, &rsa)] {
        let file = dir.path().join(format!("{:?}.pem", pair.alg));
        std::fs::write(&file, &pair.public).unwrap();
        let server = start(
            &fresh_db("api_pem"),
            &[],
            &[("MESHGUARD__AUTH__JWT_PUBLIC_KEY_FILE", file.display().to_string()), ("MESHGUARD__AUTH__JWT_HS256_SECRET", String::new())],
        );
        let get = |t: &str| {
            try_http(&server.addr, "GET", "/payments-data-product/alerts", &[("Authorization".into(), format!("Bearer {t}"))], None)
                .unwrap()
                .status
        };
        assert_eq!(get(&pair.sign(None, &idp_claims(600))), 200, "{:?} with its key", pair.alg);
        assert_eq!(get(&pair.sign(None, &idp_claims(-600))), 401, "expired");
        assert_eq!(get(&wrong_family.sign(None, &idp_claims(600))), 401, "a key of the other family");
        if pair.alg == jsonwebtoken::Algorithm::RS256 {
            assert_eq!(get(&other.sign(None, &idp_claims(600))), 401, "another RSA key");
        }
        let confused = jwt_with_key(&pair.public, &idp_claims(600));
        assert_eq!(get(&confused), 401, "HS256 signed with the public key");
    }
}

/// An HS256 token whose HMAC key is `key` (the algorithm-confusion attack uses the public key).
fn jwt_with_key(key: &[u8], claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Keys from a JWKS endpoint over HTTP: fetched at start, looked up by `kid`; a rotated key is
/// fetched when a token names it; an unknown `kid` after that fetch is a 401; a `kid` of the
/// other family, and HS256 with the public key, are refused.
#[test]
fn rs256_and_es256_tokens_with_a_jwks_endpoint_and_rotation() {
    let rsa = rsa_pair();
    let ec = ec_pair();
    let jwks = JwksServer::start(json!([rsa.jwk_with("rsa-1"), ec.jwk_with("ec-1")]));
    let server = start(
        &fresh_db("api_jwks"),
        &[],
        &[
            ("MESHGUARD__AUTH__JWKS_URL", jwks.url.clone()),
            ("MESHGUARD__AUTH__JWKS_MIN_REFRESH_MS", "0".into()),
            ("MESHGUARD__AUTH__JWT_HS256_SECRET", String::new()),
        ],
    );
    let get = |t: &str| {
        try_http(&server.addr, "GET", "/payments-data-product/alerts", &[("Authorization".into(), format!("Bearer {t}"))], None)
            .unwrap()
            .status
    };
    assert_eq!(jwks.fetches(), 1, "the set is fetched at start");
    assert_eq!(get(&rsa.sign(Some("rsa-1"), &idp_claims(600))), 200);
    assert_eq!(get(&ec.sign(Some("ec-1"), &idp_claims(600))), 200);
    assert_eq!(jwks.fetches(), 1, "known keys are served from the cache");
    assert_eq!(get(&ec.sign(Some("rsa-1"), &idp_claims(600))), 401, "an ES256 token naming an RSA key");
    assert_eq!(get(&jwt_with_key(&rsa.public, &idp_claims(600))), 401, "HS256 signed with the RSA public key");

    // Rotation: the provider adds a new key and drops the old one.
    let next = rsa_pair();
    *jwks.keys.lock().unwrap() = json!([next.jwk_with("rsa-2"), ec.jwk_with("ec-1")]);
    assert_eq!(get(&next.sign(Some("rsa-2"), &idp_claims(600))), 200, "a new kid is fetched");
    assert_eq!(jwks.fetches(), 2);
    assert_eq!(get(&rsa.sign(Some("rsa-1"), &idp_claims(600))), 401, "the dropped key is gone after the refresh");
    let before = jwks.fetches();
    assert_eq!(get(&next.sign(Some("nobody-knows"), &idp_claims(600))), 401, "an unknown kid after a refresh");
    assert_eq!(jwks.fetches(), before + 1, "the unknown kid caused one fetch");
}

/// `check --format json` and `POST /{product}/validate` on the same input at the same instant
/// give the same report (minus the input's name), and one verdict per record.
#[test]
fn validate_answers_what_check_would() {
    const NOW: &str = "2026-11-29T12:00:00Z";
    let dir = tempfile::tempdir().unwrap();
    let valid = r#"{"payment_id":"3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f","customer_id":7,"amount":19.99,"currency":"EUR","status":"COMPLETED","created_at":"2026-11-29T11:59:58Z"}"#;
    let invalid = r#"{"payment_id":"not-a-uuid","customer_id":7,"amount":19.999,"currency":"eur","status":"COMPLETED","created_at":"2026-11-29T10:00:00Z"}"#;
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let undecodable = write("undecodable.ndjson", format!("{valid}\n\n{{\"payment_id\": \n{valid}\n"));
    let one_valid = write("one-valid.json", valid.to_owned());
    let one_invalid = write("one-invalid.json", invalid.to_owned());
    let ndjson = "application/x-ndjson";
    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        (PAYMENTS, None, "samples/payments.ndjson".into(), ndjson),
        ("loans-data-product", None, "samples/loans.ndjson".into(), ndjson),
        ("loans-data-product", Some("loan-application-schema"), "samples/loan-applications.ndjson".into(), ndjson),
        ("cards-data-product", None, "samples/cards.avro".into(), "avro/binary"),
        (PAYMENTS, None, undecodable, ndjson),
        (PAYMENTS, None, one_valid, "application/json"),
        (PAYMENTS, None, one_invalid, "application/json"),
    ];
    let server = start(&fresh_db("api_validate"), &[], &secret_env());
    let token = jwt(
        SECRET,
        &json!({"sub": "v", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 600, "roles": ["fraud-team", "risk-team", "cards-team"]}),
    );
    // The input's name differs by design ("request" against the file's path): every line
    // reference loses it, in violations, rule warnings and shadow versions' violations.
    fn strip_inputs(groups: &mut Value) {
        for g in groups.as_array_mut().into_iter().flatten() {
            for at in g["lines"].as_array_mut().into_iter().flatten() {
                at.as_object_mut().unwrap().remove("input");
            }
        }
    }
    let strip = |mut r: Value| {
        r.as_object_mut().unwrap().remove("inputs");
        r.as_object_mut().unwrap().remove("results");
        strip_inputs(&mut r["violations"]);
        strip_inputs(&mut r["rule_warnings"]);
        for shadow in r["shadow"].as_array_mut().into_iter().flatten() {
            strip_inputs(&mut shadow["violations"]);
        }
        r
    };
    for (product, contract, file, content_type) in &cases {
        let mut args = vec!["check", "--product", product, "--format", "json", "--now", NOW, file.as_str()];
        if let Some(c) = contract {
            args.extend(["--contract", c]);
        }
        let out =
            Command::new(env!("CARGO_BIN_EXE_meshguard")).args(&args).current_dir(repo()).env_remove("MESHGUARD_CONFIG").output().unwrap();
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", String::from_utf8_lossy(&out.stderr));
        let by_check: Value = serde_json::from_slice(&out.stdout).unwrap();
        let body = std::fs::read(repo().join(file)).unwrap();
        let query = match contract {
            Some(c) => format!("?now={NOW}&contract={c}"),
            None => format!("?now={NOW}"),
        };
        let headers =
            vec![("Authorization".to_owned(), format!("Bearer {token}")), ("Content-Type".to_owned(), (*content_type).to_owned())];
        let r = try_http(&server.addr, "POST", &format!("/{product}/validate{query}"), &headers, Some(&body)).unwrap();
        assert_eq!(r.status, 200, "{file}: {}", r.text());
        let by_http = r.json();
        let results = by_http["results"].as_array().unwrap();
        assert_eq!(results.len() as u64, by_http["records"].as_u64().unwrap(), "{file}: one verdict per record");
        assert_eq!(results.iter().filter(|v| v["valid"] == true).count() as u64, by_http["valid"].as_u64().unwrap(), "{file}");
        assert!(by_check["records"].as_u64().unwrap() > 0, "{file}");
        assert_eq!(strip(by_http.clone()), strip(by_check), "{file}: the same report as check");
        if file.ends_with("one-invalid.json") {
            let paths: Vec<&str> = results[0]["violations"].as_array().unwrap().iter().map(|v| v["path"].as_str().unwrap()).collect();
            for p in ["/payment_id", "/amount", "/currency"] {
                assert!(paths.contains(&p), "{paths:?}");
            }
            assert_eq!(results[0]["valid"], false);
        }
        if file.ends_with("one-valid.json") {
            assert_eq!((results[0]["valid"].clone(), results[0]["freshness_seconds"].clone()), (json!(true), json!(2.0)));
            assert_eq!(results[0]["record_id"], "3f2c1a9e-8b7d-4c6e-9f10-2a3b4c5d6e7f");
        }
    }
    // A read of the product: a role without read is refused, bad input is a 400.
    let loans_only =
        jwt(SECRET, &json!({"sub": "l", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 600, "roles": ["loans-team"]}));
    let h = |t: &str| vec![("Authorization".to_owned(), format!("Bearer {t}"))];
    let post = |path: &str, t: &str, body: &[u8]| try_http(&server.addr, "POST", path, &h(t), Some(body)).unwrap();
    assert_eq!(post("/payments-data-product/validate", &loans_only, valid.as_bytes()).status, 403);
    assert_eq!(post("/payments-data-product/validate", &token, b"").status, 400);
    assert_eq!(post("/payments-data-product/validate?contract=nope", &token, valid.as_bytes()).status, 404);
    assert_eq!(post("/payments-data-product/validate?now=yesterday", &token, valid.as_bytes()).status, 400);
    let huge = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(post("/payments-data-product/validate", &token, &huge).status, 400);
}

/// A record with three valid versions and one rejected version, the same id in another product,
/// another record of the product: the lineage lists exactly the product's sources, its declared
/// services and consumers, each version as it arrived, the store with the valid versions and the
/// dead-letter topic with the rejected one.
#[test]
fn lineage_tells_the_truth() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = fresh_db("api_lineage");
    let sink = rt.block_on(MongoSink::connect(&mongodb_uri(), &db, &[PAYMENTS.to_owned()])).unwrap();
    let id = "3f000009-1111-4111-8111-111111111111";
    let doc = |topic: &str, partition: i32, offset: i64, record: &str, product: &str, valid: bool| LineageDoc {
        source_topic: topic.into(),
        source_partition: partition,
        source_offset: offset,
        source_timestamp_ms: None,
        product: product.into(),
        contract: "payment-schema".into(),
        contract_version: "1.0.0".into(),
        record_id: Some(record.into()),
        outcome: if valid { "valid" } else { "invalid" },
        destination_collection: if valid { MongoSink::record_store(product) } else { "datamesh.dlq".into() },
        destination_system: if valid { "mongodb" } else { "kafka" },
        processed_at: time::OffsetDateTime::now_utc(),
    };
    let docs = [
        doc("payments.updated", 1, 5, id, PAYMENTS, true),
        doc("payments.created", 0, 10, id, PAYMENTS, true),
        doc("payments.updated", 1, 6, id, PAYMENTS, false),
        doc("payments.completed", 2, 7, id, PAYMENTS, true),
        doc("loans.created", 0, 10, id, "loans-data-product", true),
        doc("payments.created", 0, 11, "3f00000a-1111-4111-8111-111111111111", PAYMENTS, true),
    ];
    rt.block_on(sink.write_entries(docs.iter().map(entry).collect())).unwrap();
    let server = start(&db, &[], &secret_env());
    let token =
        jwt(SECRET, &json!({"sub": "l", "iss": "meshguard", "aud": "datamesh-api", "exp": now() + 600, "roles": ["analytics-team"]}));
    let r =
        try_http(&server.addr, "GET", &format!("/{PAYMENTS}/lineage/{id}"), &[("Authorization".into(), format!("Bearer {token}"))], None)
            .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let lin = r.json();

    let yaml: Value = serde_yaml::from_str(&std::fs::read_to_string(repo().join("config/products/payments.yaml")).unwrap()).unwrap();
    let spec = &yaml["spec"];
    let mut upstream = Vec::new();
    if let Some(m) = spec["sources"].get("mysql") {
        upstream.push(json!({"kind": "source", "system": "mysql", "database": m["database"], "tables": m["tables"]}));
    }
    if let Some(m) = spec["sources"].get("mongodb") {
        upstream.push(json!({"kind": "source", "system": "mongodb", "database": m["database"], "collections": m["collections"]}));
    }
    for u in spec["lineage"]["upstream"].as_array().unwrap() {
        upstream.push(json!({"kind": "declared", "source": u["source"], "type": u["type"]}));
    }
    for (topic, partition, offset, outcome) in [
        ("payments.completed", 2, 7, "valid"),
        ("payments.created", 0, 10, "valid"),
        ("payments.updated", 1, 5, "valid"),
        ("payments.updated", 1, 6, "invalid"),
    ] {
        upstream.push(json!({"kind": "event", "system": "kafka", "topic": topic, "partition": partition, "offset": offset, "timestamp": null,
            "contract": "payment-schema", "contract_version": "1.0.0", "outcome": outcome, "lineage_id": format!("{topic}/{partition}/{offset}/-")}));
    }
    assert!(upstream.len() >= 6, "the product declares its sources and upstream services");
    assert_eq!(lin["upstream"], json!(upstream));

    let mut downstream = vec![
        json!({"kind": "store", "system": "mongodb", "collection": format!("records.{PAYMENTS}"), "document_id": id,
            "versions": ["payments.completed/2/7/-", "payments.created/0/10/-", "payments.updated/1/5/-"]}),
        json!({"kind": "dead_letter", "system": "kafka", "topic": "datamesh.dlq", "versions": ["payments.updated/1/6/-"]}),
    ];
    for d in spec["lineage"]["downstream"].as_array().unwrap() {
        downstream.push(json!({"kind": "declared", "consumer": d["consumer"], "type": d["type"]}));
    }
    assert!(downstream.len() >= 3, "the product declares its consumers");
    assert_eq!(lin["downstream"], json!(downstream));
    assert_eq!((lin["product"].as_str(), lin["record_id"].as_str()), (Some(PAYMENTS), Some(id)));
}

/// GraphQL generated from the contract: a record by id, the REST search, lineage, introspection;
/// REST's access rules and audit; a query nested too deep is refused with a clear error.
#[test]
fn graphql_answers_with_the_rest_rules() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = fresh_db("api_graphql");
    let products: Vec<String> = access_matrix().into_iter().map(|(p, _)| p).collect();
    let sink = rt.block_on(MongoSink::connect(&mongodb_uri(), &db, &products)).unwrap();
    let roles: Vec<String> = ["payments-team", "loans-team", "fraud-team"].iter().map(|r| (*r).to_owned()).collect();
    let payments = rt.block_on(seed(&sink, &roles));
    let server = start(&db, &[], &secret_env());
    let gql = |user: Option<&str>, query: &str, variables: Value| {
        let headers: Vec<(String, String)> =
            user.map(|u| vec![("Authorization".to_owned(), format!("Bearer {}", token_for(u)))]).unwrap_or_default();
        let body = json!({"query": query, "variables": variables}).to_string();
        try_http(&server.addr, "POST", "/payments-data-product/graphql", &headers, Some(body.as_bytes())).unwrap()
    };
    let reader = Some("u-fraud-team");
    // A body without `query` is the client's error (the OpenAPI document requires it), not a
    // 200 carrying a parse error.
    let auth = vec![("Authorization".to_owned(), format!("Bearer {}", token_for("u-fraud-team")))];
    let missing = try_http(&server.addr, "POST", "/payments-data-product/graphql", &auth, Some(b"{}")).unwrap();
    assert_eq!(missing.status, 400, "{}", missing.text());
    let p1 = &payments[1];
    let r = gql(reader, "query($id: ID!) { record(id: $id) { payment_id amount status currency _meta } }", json!({"id": p1.id}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"]["record"]["amount"], 999, "{v}");
    assert_eq!(v["data"]["record"]["status"], "COMPLETED", "{v}");
    assert_eq!(v["data"]["record"]["_meta"]["offset"], 500, "{v}");
    let none = gql(reader, "{ record(id: \"no-such-record\") { payment_id } }", json!({})).json();
    assert_eq!(none["data"]["record"], Value::Null, "{none}");

    let filter = json!({"field": "currency", "op": "eq", "value": "GBP"});
    let v = gql(reader, "query($f: JSON) { search(filter: $f, limit: 500) { count results { payment_id } } }", json!({"f": filter})).json();
    let mut got: Vec<String> =
        v["data"]["search"]["results"].as_array().unwrap().iter().map(|r| r["payment_id"].as_str().unwrap().to_owned()).collect();
    got.sort();
    let mut want: Vec<String> = payments.iter().filter(|p| p.currency == "GBP").map(|p| p.id.clone()).collect();
    want.sort();
    assert_eq!(got, want, "{v}");
    let bad = gql(reader, "query($f: JSON) { search(filter: $f) { count } }", json!({"f": {"$where": "1"}})).json();
    assert_eq!(bad["errors"][0]["extensions"]["status"], 400, "the REST language and its errors: {bad}");
    assert_eq!(bad["errors"][0]["extensions"]["errors"][0]["field"], "filter.$where", "{bad}");

    let lin = gql(reader, "query($id: ID!) { lineage(id: $id) }", json!({"id": payments[2].id})).json();
    assert_eq!(lin["data"]["lineage"]["product"], PAYMENTS, "{lin}");

    let intro = gql(reader, "{ __type(name: \"PaymentsDataProduct\") { fields { name } } }", json!({})).json();
    let names: Vec<&str> = intro["data"]["__type"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for f in ["payment_id", "amount", "currency", "status", "_meta"] {
        assert!(names.contains(&f), "{names:?}");
    }
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }";
    let d = gql(reader, deep, json!({})).json();
    assert!(d["errors"][0]["message"].as_str().unwrap_or_default().contains("nested too deep"), "{d}");

    assert_eq!(gql(Some("u-loans-team"), "{ record(id: \"x\") { payment_id } }", json!({})).status, 403);
    assert_eq!(gql(None, "{ record(id: \"x\") { payment_id } }", json!({})).status, 401);
    let docs = audit_docs(&rt, &db);
    let graphql: Vec<&bson::Document> = docs.iter().filter(|d| d.get_str("route").ok() == Some("/{product}/graphql")).collect();
    assert_eq!(graphql.len(), 10, "every GraphQL request is audited (the refused empty body too): {graphql:?}");
    assert_eq!(graphql.iter().filter(|d| d.get_i32("status").ok() == Some(403)).count(), 1);
}
