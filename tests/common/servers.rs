//! Where the real servers are (from `testcontainers/env`), names no other run uses, the
//! repository and the binary under test, and plain HTTP.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

pub const START_HINT: &str = "start the test servers with `testcontainers/up` and `source testcontainers/env`";

/// The broker address from MESHGUARD_TEST_KAFKA; fails loudly when unset or unreachable.
pub fn kafka() -> String {
    let addr = std::env::var("MESHGUARD_TEST_KAFKA").unwrap_or_else(|_| panic!("MESHGUARD_TEST_KAFKA is not set: {START_HINT}"));
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &addr).create().unwrap_or_else(|e| panic!("kafka client: {e}"));
    if let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
        panic!("Kafka at {addr} does not answer ({e}): {START_HINT}");
    }
    addr
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshguard"))
}

/// MongoDB URI from MESHGUARD_TEST_MONGODB; fails loudly when unset.
pub fn mongodb() -> String {
    std::env::var("MESHGUARD_TEST_MONGODB").unwrap_or_else(|_| panic!("MESHGUARD_TEST_MONGODB is not set: {START_HINT}"))
}

/// MySQL URL from MESHGUARD_TEST_MYSQL; fails loudly when unset.
pub fn mysql() -> String {
    std::env::var("MESHGUARD_TEST_MYSQL").unwrap_or_else(|_| panic!("MESHGUARD_TEST_MYSQL is not set: {START_HINT}"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

/// A tiny HTTP/1.0 GET, so tests need no HTTP client dependency.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// Sum of a metric's samples whose labels contain every `label=value` given.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
