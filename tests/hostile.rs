//! The hostile-input corpus against `meshguard run` and a real broker: every record that cannot be
//! decoded or breaks its contract — invalid UTF-8, truncated and deeply nested JSON, a 10 MB
//! value, NaN/Infinity/huge numbers, Avro with a wrong magic byte, an unknown schema id or
//! fingerprint, garbage keys and headers, a record too large for the dead-letter topic even
//! without its payload — ends in the dead-letter topic with a reason, and the valid records
//! queued behind them on the same partition are all processed and committed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Big enough for the 10 MB record plus its envelope.
const BIG: &str = "16777216";

async fn create_big_topic(bootstrap: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap_or_else(|e| panic!("admin: {e}"));
    // One partition: the poison and the valid records behind it share it.
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", BIG);
    let results = admin
        .create_topics([&new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))))
        .await
        .unwrap_or_else(|e| panic!("create topic: {e}"));
    for r in results {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e}");
        }
    }
}

/// One hostile record and what its dead letter must say.
struct Poison {
    name: &'static str,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// `meshguard.stage` expected.
    stage: &'static str,
    /// `meshguard.error.class` expected (`None`: any non-empty class).
    class: Option<&'static str>,
}

fn poison(name: &'static str, payload: impl Into<Vec<u8>>, stage: &'static str, class: Option<&'static str>) -> Poison {
    Poison { name, key: None, payload: payload.into(), headers: Vec::new(), stage, class }
}

fn json_corpus() -> Vec<Poison> {
    let mut c = vec![
        poison("invalid UTF-8", b"\xff\xfe\x00garbage".to_vec(), "decode", Some("json_syntax")),
        poison("invalid UTF-8 inside a string", b"{\"payment_id\":\"\xc3\x28\"}".to_vec(), "decode", Some("json_syntax")),
        poison("truncated JSON", b"{\"payment_id\":".to_vec(), "decode", Some("json_syntax")),
        poison("200k-deep unclosed nesting", "[".repeat(200_000), "decode", Some("json_syntax")),
        poison("100k-deep closed nesting", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), "decode", Some("json_syntax")),
        poison("NaN", "NaN", "decode", Some("json_syntax")),
        poison("Infinity in a field", "{\"amount\": Infinity}", "decode", Some("json_syntax")),
        poison("number out of f64 range", "{\"amount\": 1e400}", "decode", Some("json_syntax")),
        poison("huge integer", "{\"payment_id\": 123456789012345678901234567890123456789}", "validate", Some("contract_violation")),
        poison("empty payload", Vec::new(), "decode", Some("empty")),
        poison("10 MB value", format!("{{\"payment_id\":\"{}\"}}", "x".repeat(10_000_000)), "validate", Some("contract_violation")),
        poison("not an object", "[1,2,3]", "validate", Some("contract_violation")),
        poison("NUL bytes", b"\x00\x00\x00\x00".to_vec(), "decode", Some("json_syntax")),
    ];
    // Garbage keys and headers: carried into the dead letter unchanged.
    let mut garbage = poison("binary key and headers", "{", "decode", Some("json_syntax"));
    garbage.key = Some(b"\xff\x00\xfe key \xc3\x28".to_vec());
    garbage.headers = vec![
        ("binary".into(), Some(b"\x00\xff\xfe\xc3\x28".to_vec())),
        (String::new(), Some(b"empty name".to_vec())),
        ("null value".into(), None),
        ("big".into(), Some(vec![0xAB; 100_000])),
    ];
    garbage.headers.extend((0..500).map(|i| (format!("h{i}"), Some(vec![i as u8; 3]))));
    c.push(garbage);
    // Too large for the dead-letter topic even without its payload: only the reason goes.
    let mut huge = poison("600 kB key and 600 kB of headers", "{", "decode", Some("json_syntax"));
    huge.key = Some(vec![b'k'; 600_000]);
    huge.headers = vec![("bulk".into(), Some(vec![b'h'; 600_000]))];
    c.push(huge);
    c
}

fn avro_corpus() -> Vec<Poison> {
    vec![
        // 0x01 instead of 0x00: not Confluent framing, so read as a plain datum, which fails.
        poison("wrong magic byte", [&[0x01u8, 0, 0, 0, 2][..], b"\x48abcdefgh"].concat(), "decode", Some("avro_datum")),
        poison("unknown Confluent schema id", [&[0x00u8, 0, 0, 0x30, 0x39][..], b"\x02a"].concat(), "decode", Some("avro_unknown_schema")),
        poison(
            "unknown single-object fingerprint",
            vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x02, b'a'],
            "decode",
            Some("avro_unknown_schema"),
        ),
        poison("truncated single-object header", vec![0xC3, 0x01, 1, 2], "decode", Some("avro_unknown_schema")),
        poison("known id, garbage datum", [&[0x00u8, 0, 0, 0, 2][..], &[0xff; 32][..]].concat(), "decode", Some("avro_datum")),
        poison("known id, negative string length", [&[0x00u8, 0, 0, 0, 2][..], &[0x01][..]].concat(), "decode", Some("avro_datum")),
        poison("JSON on an Avro topic", "{\"transaction_id\":\"x\"}", "decode", Some("avro_datum")),
        poison("empty payload", Vec::new(), "decode", Some("empty")),
    ]
}

async fn produce_corpus(producer: &FutureProducer, topic: &str, corpus: &[Poison]) -> Vec<i64> {
    let mut offsets = Vec::new();
    for p in corpus {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &p.headers {
            headers = headers.insert(Header { key: k.as_str(), value: v.as_deref() });
        }
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic).payload(&p.payload).headers(headers);
        if let Some(k) = &p.key {
            rec = rec.key(k);
        }
        let d = producer.send(rec, Duration::from_secs(30)).await.unwrap_or_else(|(e, _)| panic!("{}: {e}", p.name));
        offsets.push(d.offset);
    }
    offsets
}

/// Valid events of a contract, produced with the project's generator.
async fn produce_valid(producer: &FutureProducer, topic: &str, product: &str, n: usize) {
    let catalog = meshguard::product::Catalog::load(&meshguard::product::Files::Disk {
        products: repo().join("config/products"),
        schemas: repo().join("schemas"),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let contract = catalog.product(product).and_then(|p| p.contract(None)).cloned().unwrap_or_else(|| panic!("{product}"));
    let mut generator = meshguard::generate::Generator::for_contract(&contract, 11, 0.0, 0.0).unwrap_or_else(|| panic!("generator"));
    for _ in 0..n {
        let e = generator.next_event(time::OffsetDateTime::now_utc());
        let rec = FutureRecord::to(topic).key(&e.key).payload(&e.payload);
        let _ = producer.send(rec, Duration::from_secs(30)).await.unwrap_or_else(|(e, _)| panic!("{e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_records_are_dead_lettered_with_a_reason_and_never_stall_a_partition() {
    let kafka = kafka();
    let (json_topic, avro_topic) = (unique("hostile-json"), unique("hostile-avro"));
    create_big_topic(&kafka, &json_topic).await;
    create_big_topic(&kafka, &avro_topic).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("message.max.bytes", BIG)
        .set("compression.type", "lz4")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    let json = json_corpus();
    let avro = avro_corpus();
    let json_offsets = produce_corpus(&producer, &json_topic, &json).await;
    let avro_offsets = produce_corpus(&producer, &avro_topic, &avro).await;
    // Valid records queued behind the poison on the same partition.
    produce_valid(&producer, &json_topic, "payments-data-product", 200).await;
    produce_valid(&producer, &avro_topic, "cards-data-product", 200).await;

    let products = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    bind_product(products.path(), "payments.yaml", &[&json_topic]);
    bind_product(products.path(), "cards.yaml", &[&avro_topic]);
    let names = Names::new();
    let service = Service::start(&kafka, products.path(), &names, &[("MESHGUARD__MYSQL__ENABLED", "false")]);
    wait_committed(&kafka, &names.group, &[&json_topic], 1, (json.len() + 200) as i64, Duration::from_secs(120));
    wait_committed(&kafka, &names.group, &[&avro_topic], 1, (avro.len() + 200) as i64, Duration::from_secs(120));

    let dead = read_all(&kafka, &names.dlq, json.len() + avro.len(), Duration::from_secs(60));
    let mut by_position: BTreeMap<(String, i64), &DeadLetter> = BTreeMap::new();
    for d in &dead {
        let topic = d.headers.get("meshguard.source.topic").cloned().unwrap_or_default();
        let offset = d.headers.get("meshguard.source.offset").and_then(|o| o.parse().ok()).unwrap_or(-1);
        assert!(by_position.insert((topic, offset), d).is_none(), "one dead letter per record");
    }
    assert_eq!(dead.len(), json.len() + avro.len(), "exactly the hostile records are dead-lettered");

    for (topic, corpus, offsets) in [(&json_topic, &json, &json_offsets), (&avro_topic, &avro, &avro_offsets)] {
        for (p, offset) in corpus.iter().zip(offsets) {
            let d = by_position.get(&(topic.clone(), *offset)).unwrap_or_else(|| panic!("{}: no dead letter at offset {offset}", p.name));
            let h: &HashMap<String, String> = &d.headers;
            assert_eq!(h.get("meshguard.stage").map(String::as_str), Some(p.stage), "{}: {h:?}", p.name);
            let class = h.get("meshguard.error.class").cloned().unwrap_or_default();
            assert!(!class.is_empty(), "{}: a class", p.name);
            if let Some(c) = p.class {
                assert_eq!(class, c, "{}", p.name);
            }
            let violations: serde_json::Value =
                serde_json::from_str(h.get("meshguard.violations").map(String::as_str).unwrap_or("null")).unwrap_or_default();
            let first = violations.as_array().and_then(|v| v.first()).cloned().unwrap_or_default();
            assert!(first["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: a reason: {violations}", p.name);
            let dropped = h.get("meshguard.payload.dropped").map(String::as_str);
            match p.name {
                "10 MB value" => {
                    assert_eq!(dropped, Some("true"), "{}", p.name);
                    assert_eq!(h.get("meshguard.payload.bytes").map(String::as_str), Some(p.payload.len().to_string().as_str()));
                    assert!(d.payload.is_none(), "{}", p.name);
                }
                "600 kB key and 600 kB of headers" => {
                    assert_eq!(dropped, Some("true"));
                    assert_eq!(h.get("meshguard.key_and_headers.dropped").map(String::as_str), Some("true"));
                    assert!(d.key.is_none() && d.payload.is_none() && !h.contains_key("bulk"));
                }
                _ => {
                    assert_eq!(dropped, None, "{}", p.name);
                    assert_eq!(d.payload.as_deref().unwrap_or_default(), &p.payload[..], "{}: original bytes unchanged", p.name);
                    assert_eq!(d.key, p.key, "{}: original key unchanged", p.name);
                    for (k, v) in &p.headers {
                        let want = String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned();
                        assert_eq!(h.get(k), Some(&want), "{}: header {k:?} carried", p.name);
                    }
                }
            }
        }
    }

    // The service is alive and counted what it saw.
    let (code, metrics) = service.get("/metrics").unwrap_or_default();
    assert_eq!(code, 200);
    assert_eq!(metric_sum(&metrics, "meshguard_dead_letters_total", &[]) as usize, json.len() + avro.len());
    assert_eq!(metric_sum(&metrics, "meshguard_events_total", &[("outcome", "valid")]) as usize, 400);
}
