//! Card transactions in Avro: every framing the cards contract accepts, and broken ones.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use rand::Rng;
use rand::rngs::StdRng;
use rust_decimal::Decimal;
use time::OffsetDateTime;

use super::{CURRENCIES, Event, Intent, SourceRow, uuid};

/// Which Avro framing card events use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CardFraming {
    /// A realistic mix of Confluent (v0 and v1 ids), single-object (v0 and v1) and plain.
    Mixed,
    /// Confluent wire format, schema id 2 (v1).
    Confluent,
    /// Single-object encoding with the v1 fingerprint.
    SingleObject,
    /// Plain v1 datums.
    Plain,
}

struct Schemas {
    v1: Schema,
    v0: Schema,
    /// v1 with `transaction_id` as a plain string: encodes ids that are not uuids.
    loose: Schema,
}

fn schemas() -> Option<&'static Schemas> {
    static SCHEMAS: OnceLock<Option<Schemas>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            let v1_text = include_str!("../../schemas/card-transaction.avsc");
            let loose_text = v1_text.replacen(r#"{ "type": "string", "logicalType": "uuid" }"#, r#""string""#, 1);
            Some(Schemas {
                v1: Schema::parse_str(v1_text).ok()?,
                v0: Schema::parse_str(include_str!("../../schemas/card-transaction-v0.avsc")).ok()?,
                loose: Schema::parse_str(&loose_text).ok()?,
            })
        })
        .as_ref()
}

/// The schema card records are written with in Avro container samples (ids may be non-uuids).
pub fn container_schema() -> Option<&'static Schema> {
    schemas().map(|s| &s.loose)
}

fn record(id: &str, rng: &mut StdRng, amount: Decimal, currency: &str, status: &str, created: OffsetDateTime, v1: bool) -> Avro {
    let millis = i64::try_from(created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut fields = vec![
        ("transaction_id".to_owned(), Avro::String(id.to_owned())),
        ("card_id".to_owned(), Avro::String(format!("card-{:06}", rng.random_range(0..1_000_000)))),
        ("customer_id".to_owned(), Avro::Long(rng.random_range(1..5_000_000))),
        ("amount".to_owned(), Avro::String(amount.to_string())),
        ("currency".to_owned(), Avro::String(currency.to_owned())),
        ("status".to_owned(), Avro::Enum(status_index(status), status.to_owned())),
    ];
    if v1 {
        let merchant = if rng.random_bool(0.9) {
            Avro::Union(
                1,
                Box::new(Avro::Record(vec![
                    ("name".to_owned(), Avro::String(format!("Merchant {}", rng.random_range(1..500)))),
                    ("mcc".to_owned(), Avro::String(format!("{:04}", rng.random_range(1000..9999)))),
                    ("country".to_owned(), Avro::String("DE".to_owned())),
                ])),
            )
        } else {
            Avro::Union(0, Box::new(Avro::Null))
        };
        fields.push(("merchant".to_owned(), merchant));
    }
    fields.push(("created_at".to_owned(), Avro::TimestampMillis(millis)));
    if v1 {
        fields.push(("updated_at".to_owned(), Avro::Union(1, Box::new(Avro::TimestampMillis(millis)))));
    }
    Avro::Record(fields)
}

const STATUS: &[&str] = &["AUTHORIZED", "SETTLED", "DECLINED", "REVERSED"];

fn status_index(s: &str) -> u32 {
    STATUS.iter().position(|x| *x == s).and_then(|i| u32::try_from(i).ok()).unwrap_or(0)
}

fn datum(schema: &Schema, value: &Avro) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value.clone()))
        .unwrap_or_default()
}

fn single_object(schema: &Schema, fingerprint_of: &Schema, value: &Avro) -> Vec<u8> {
    let fp = fingerprint_of.fingerprint::<apache_avro::rabin::Rabin>();
    let mut out = vec![0xC3, 0x01];
    out.extend_from_slice(&fp.bytes);
    out.extend(datum(schema, value));
    out
}

fn confluent(id: u32, schema: &Schema, value: &Avro) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(datum(schema, value));
    out
}

/// One card event for the record id `id`.
pub(super) fn card_event(
    rng: &mut StdRng,
    id: String,
    now: OffsetDateTime,
    invalid: bool,
    mismatch_ratio: f64,
    framing: CardFraming,
) -> Event {
    let Some(s) = schemas() else {
        return Event {
            key: String::new(),
            payload: Vec::new(),
            intent: Intent::Undecodable("schemas unavailable"),
            source: None,
            mismatched: false,
        };
    };
    let amount = Decimal::new(rng.random_range(100..500_000), 2);
    let currency = CURRENCIES[rng.random_range(0..CURRENCIES.len())];
    let status = STATUS[rng.random_range(0..STATUS.len())];
    let created = now - time::Duration::milliseconds(rng.random_range(20..800));
    let v1 = record(&id, rng, amount, currency, status, created, true);
    let (payload, intent) = if invalid {
        match rng.random_range(0..4) {
            0 => (confluent(99, &s.v1, &v1), Intent::Undecodable("unknown schema id")),
            1 => {
                let mut b = single_object(&s.v1, &s.v1, &v1);
                b.truncate(b.len() / 2);
                (b, Intent::Undecodable("truncated datum"))
            }
            2 => {
                let bad = record("TX-0001", rng, amount, currency, status, created, true);
                (single_object(&s.loose, &s.v1, &bad), Intent::Undecodable("transaction id is not a uuid"))
            }
            _ => (confluent(2, &s.v1, &v1)[..3].to_vec(), Intent::Undecodable("short confluent header")),
        }
    } else {
        let choice = match framing {
            CardFraming::Mixed => rng.random_range(0..5),
            CardFraming::Confluent => 0,
            CardFraming::SingleObject => 2,
            CardFraming::Plain => 4,
        };
        let payload = match choice {
            0 => confluent(2, &s.v1, &v1),
            1 => confluent(1, &s.v0, &record(&id, rng, amount, currency, status, created, false)),
            2 => single_object(&s.v1, &s.v1, &v1),
            3 => single_object(&s.v0, &s.v0, &record(&id, rng, amount, currency, status, created, false)),
            _ => datum(&s.v1, &v1),
        };
        (payload, Intent::Valid)
    };
    let mismatched = intent.is_valid() && rng.random_bool(mismatch_ratio);
    let source = intent.is_valid().then(|| SourceRow {
        id: id.clone(),
        customer_id: 0,
        amount: if mismatched { amount + Decimal::ONE } else { amount },
        currency: currency.to_owned(),
        status: status.to_owned(),
        created_at: created,
    });
    Event { key: id, payload, intent, source, mismatched }
}

/// Card records for an Avro container file: valid ones, and with `invalid` an id that is not
/// a uuid (the contract's reader schema rejects it).
pub fn container_record(rng: &mut StdRng, now: OffsetDateTime, invalid: bool) -> Avro {
    let id = if invalid { format!("TX-{:06}", rng.random_range(0..1_000_000)) } else { uuid(rng) };
    let amount = Decimal::new(rng.random_range(100..500_000), 2);
    let currency = CURRENCIES[rng.random_range(0..CURRENCIES.len())];
    let status = STATUS[rng.random_range(0..STATUS.len())];
    let created = now - time::Duration::milliseconds(rng.random_range(20..800));
    record(&id, rng, amount, currency, status, created, true)
}
