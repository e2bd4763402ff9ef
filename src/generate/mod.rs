//! Realistic events standing in for the domain services: payments, loans and cards, with a
//! controlled share of invalid records (a spread of real-world mistakes and some undecodable
//! bytes) and the matching source-database rows for reconciliation.

mod avro;
pub mod mysql;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::contract::Contract;

pub use self::avro::{CardFraming, container_record, container_schema};

/// What kind of record an event is, as the generator intended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Holds to its contract.
    Valid,
    /// Decodes but breaks the contract (the string names the mistake).
    Invalid(&'static str),
    /// Not a record at all.
    Undecodable(&'static str),
}

impl Intent {
    /// Whether meshguard should accept it.
    pub fn is_valid(self) -> bool {
        matches!(self, Self::Valid)
    }
}

/// The source-of-truth row behind an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    /// Primary key (the record id).
    pub id: String,
    /// Customer.
    pub customer_id: i64,
    /// Amount as the source holds it (may differ from the event when a mismatch was asked for).
    pub amount: Decimal,
    /// ISO currency.
    pub currency: String,
    /// Status.
    pub status: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Kafka key: the record id (random bytes for undecodable records).
    pub key: String,
    /// The payload as the producer sends it.
    pub payload: Vec<u8>,
    /// What it is meant to be.
    pub intent: Intent,
    /// The matching source row, for valid records of reconciled contracts.
    pub source: Option<SourceRow>,
    /// Whether `source.amount` deliberately differs from the event.
    pub mismatched: bool,
}

/// Which generator a contract gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Payment,
    PaymentAnalytics,
    Loan,
    LoanApplication,
    Card,
}

/// Generates events for one contract.
#[derive(Debug)]
pub struct Generator {
    kind: Kind,
    rng: StdRng,
    invalid_ratio: f64,
    mismatch_ratio: f64,
    card_framing: CardFraming,
    /// Record ids events are drawn from (`with_key_pool`); empty: a fresh id per event.
    key_pool: Vec<String>,
}

const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "CHF", "JPY"];
const PAYMENT_STATUS: &[&str] = &["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"];
const METHODS: &[&str] = &["CARD", "ACH", "WIRE", "CHECK"];

impl Generator {
    /// A generator for `contract`, or `None` if meshguard has no generator for it.
    pub fn for_contract(contract: &Contract, seed: u64, invalid_ratio: f64, mismatch_ratio: f64) -> Option<Self> {
        let kind = match contract.name.as_str() {
            "payment-schema" => Kind::Payment,
            "payment-analytics-schema" => Kind::PaymentAnalytics,
            "loan-schema" => Kind::Loan,
            "loan-application-schema" => Kind::LoanApplication,
            "card-transaction" => Kind::Card,
            _ => return None,
        };
        Some(Self {
            kind,
            rng: StdRng::seed_from_u64(seed),
            invalid_ratio: invalid_ratio.clamp(0.0, 1.0),
            mismatch_ratio: mismatch_ratio.clamp(0.0, 1.0),
            card_framing: CardFraming::Mixed,
            key_pool: Vec::new(),
        })
    }

    /// Draws every event's record id from a pool of `keys` ids (0: a fresh id per event), so a
    /// stream of n events updates at most `keys` records, as a domain service updating its
    /// payments does. The pool comes from its own generator seeded from `seed`: the same seed
    /// and size give the same ids.
    pub fn with_key_pool(mut self, keys: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6b65_7973_706f_6f6c);
        self.key_pool = (0..keys).map(|_| uuid(&mut rng)).collect();
        self
    }

    /// The next record id: from the pool if there is one, else fresh.
    fn next_id(&mut self) -> String {
        if self.key_pool.is_empty() {
            return uuid(&mut self.rng);
        }
        let i = self.rng.random_range(0..self.key_pool.len());
        self.key_pool[i].clone()
    }

    /// Sets the Avro framing of card events.
    pub fn with_card_framing(mut self, framing: CardFraming) -> Self {
        self.card_framing = framing;
        self
    }

    /// The next event, stamped around `now`.
    pub fn next_event(&mut self, now: OffsetDateTime) -> Event {
        let invalid = self.rng.random_bool(self.invalid_ratio);
        match self.kind {
            Kind::Card => {
                let id = self.next_id();
                avro::card_event(&mut self.rng, id, now, invalid, self.mismatch_ratio, self.card_framing)
            }
            _ => self.json_event(now, invalid),
        }
    }

    /// The next valid record as a JSON value (cards: its JSON form), for Avro container samples.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn json_event(&mut self, now: OffsetDateTime, invalid: bool) -> Event {
        let id = self.next_id();
        let rng = &mut self.rng;
        let customer_id: i64 = rng.random_range(1..5_000_000);
        let amount = Decimal::new(rng.random_range(100..2_500_000), 2);
        let currency = CURRENCIES[rng.random_range(0..CURRENCIES.len())];
        let created = now - time::Duration::milliseconds(rng.random_range(50..900));
        let mut doc = Map::new();
        let (id_field, amount_field, status) = match self.kind {
            Kind::Payment => {
                let status = PAYMENT_STATUS[rng.random_range(0..PAYMENT_STATUS.len())];
                let _ = doc.insert("payment_id".into(), json!(id));
                let _ = doc.insert("customer_id".into(), json!(customer_id));
                let _ = doc.insert("amount".into(), number(amount));
                let _ = doc.insert("currency".into(), json!(currency));
                let _ = doc.insert("status".into(), json!(status));
                if rng.random_bool(0.8) {
                    let last_four = format!("{:04}", rng.random_range(0..10_000));
                    let _ = doc.insert(
                        "payment_method".into(),
                        json!({"type": METHODS[rng.random_range(0..METHODS.len())], "last_four": last_four}),
                    );
                }
                let _ = doc.insert("created_at".into(), json!(rfc3339(created)));
                let _ = doc.insert("updated_at".into(), json!(rfc3339(now - time::Duration::milliseconds(rng.random_range(0..50)))));
                ("payment_id", "amount", status)
            }
            Kind::PaymentAnalytics => {
                let _ = doc.insert("payment_id".into(), json!(id));
                let _ = doc.insert("customer_id".into(), json!(customer_id));
                let _ = doc.insert("amount".into(), number(amount));
                let _ = doc.insert("currency".into(), json!(currency));
                let _ = doc.insert("channel".into(), json!(["ONLINE", "MOBILE", "BRANCH", "ATM", "API"][rng.random_range(0..5)]));
                let _ = doc.insert("merchant_category".into(), json!(format!("{:04}", rng.random_range(1000..9999))));
                let _ = doc.insert("country".into(), json!(["DE", "FR", "US", "GB", "CH"][rng.random_range(0..5)]));
                let _ = doc.insert("risk_score".into(), json!(f64::from(rng.random_range(0..1000_u32)) / 1000.0));
                let _ = doc.insert("processed_at".into(), json!(rfc3339(created)));
                ("payment_id", "amount", "COMPLETED")
            }
            Kind::Loan => {
                let status = ["APPROVED", "DISBURSED", "REPAYING", "REPAID"][rng.random_range(0..4)];
                let _ = doc.insert("loan_id".into(), json!(id));
                let _ = doc.insert("customer_id".into(), json!(customer_id));
                let principal = Decimal::new(rng.random_range(100_000..50_000_000), 2);
                let _ = doc.insert("principal".into(), number(principal));
                let _ = doc.insert("currency".into(), json!(currency));
                let _ = doc.insert("interest_rate".into(), json!(f64::from(rng.random_range(100..1500_u32)) / 100.0));
                let _ = doc.insert("term_months".into(), json!(rng.random_range(6..361)));
                let _ = doc.insert("status".into(), json!(status));
                if rng.random_bool(0.5) {
                    let _ = doc.insert("collateral".into(), json!({"type": "PROPERTY", "value": number(principal * Decimal::from(2))}));
                }
                let _ = doc.insert("created_at".into(), json!(rfc3339(created)));
                let _ = doc.insert("updated_at".into(), json!(rfc3339(now)));
                return self.finish_json(doc, id, "principal", principal, currency, status, customer_id, created, invalid);
            }
            Kind::LoanApplication => {
                let _ = doc.insert("application_id".into(), json!(id));
                let _ = doc.insert("customer_id".into(), json!(customer_id));
                let _ = doc.insert("requested_amount".into(), number(amount));
                let _ = doc.insert("currency".into(), json!(currency));
                let _ = doc.insert("purpose".into(), json!(["HOME", "AUTO", "EDUCATION", "BUSINESS", "PERSONAL"][rng.random_range(0..5)]));
                let _ = doc.insert("applicant".into(), json!({"name": format!("Customer {customer_id}"), "email": format!("c{customer_id}@example.com"), "annual_income": rng.random_range(20_000..300_000)}));
                let _ = doc.insert("submitted_at".into(), json!(rfc3339(created)));
                ("application_id", "requested_amount", "APPLIED")
            }
            Kind::Card => unreachable_card(),
        };
        let _ = id_field;
        self.finish_json(doc, id, amount_field, amount, currency, status, customer_id, created, invalid)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_json(
        &mut self,
        mut doc: Map<String, Value>,
        id: String,
        amount_field: &str,
        amount: Decimal,
        currency: &str,
        status: &str,
        customer_id: i64,
        created: OffsetDateTime,
        invalid: bool,
    ) -> Event {
        let rng = &mut self.rng;
        let mut intent = Intent::Valid;
        if invalid {
            intent = break_json(rng, &mut doc, amount_field);
        }
        let payload = match intent {
            Intent::Undecodable(how) => undecodable_bytes(rng, how, &doc),
            _ => serde_json::to_vec(&Value::Object(doc)).unwrap_or_default(),
        };
        let mismatched = intent.is_valid() && rng.random_bool(self.mismatch_ratio);
        let source_amount = if mismatched { amount + Decimal::new(rng.random_range(2..10_000), 2) } else { amount };
        let source = intent.is_valid().then(|| SourceRow {
            id: id.clone(),
            customer_id,
            amount: source_amount,
            currency: currency.to_owned(),
            status: status.to_owned(),
            created_at: created,
        });
        Event { key: id, payload, intent, source, mismatched }
    }
}

fn unreachable_card() -> (&'static str, &'static str, &'static str) {
    ("transaction_id", "amount", "AUTHORIZED")
}

/// Breaks a valid JSON record in one realistic way.
fn break_json(rng: &mut StdRng, doc: &mut Map<String, Value>, amount_field: &str) -> Intent {
    let required: Vec<String> = doc
        .keys()
        .filter(|k| {
            !matches!(
                k.as_str(),
                "payment_method"
                    | "updated_at"
                    | "collateral"
                    | "interest_rate"
                    | "term_months"
                    | "purpose"
                    | "merchant_category"
                    | "country"
                    | "risk_score"
            )
        })
        .cloned()
        .collect();
    match rng.random_range(0..10) {
        0 => {
            let victim = &required[rng.random_range(0..required.len())];
            let _ = doc.remove(victim);
            Intent::Invalid("missing required field")
        }
        1 => {
            let _ = doc.insert(amount_field.into(), json!(12.345));
            Intent::Invalid("amount with three decimals")
        }
        2 => {
            let _ = doc.insert(amount_field.into(), json!(-10.5));
            Intent::Invalid("negative amount")
        }
        3 => {
            let _ = doc.insert("currency".into(), json!("usd"));
            Intent::Invalid("lower-case currency")
        }
        4 => {
            let _ = doc.insert("customer_id".into(), json!("42"));
            Intent::Invalid("customer id as a string")
        }
        5 => {
            let id_key = doc.keys().find(|k| k.ends_with("_id") && *k != "customer_id").cloned();
            if let Some(k) = id_key {
                let _ = doc.insert(k, json!("PAY-000123"));
            }
            Intent::Invalid("id that is not a uuid")
        }
        6 => {
            let ts_key = doc.keys().find(|k| k.ends_with("_at")).cloned();
            if let Some(k) = ts_key {
                let _ = doc.insert(k, json!("2026-13-45 25:61"));
            }
            Intent::Invalid("malformed timestamp")
        }
        7 => {
            if doc.contains_key("status") {
                let _ = doc.insert("status".into(), json!("DONE"));
            } else {
                let _ = doc.insert("customer_id".into(), json!(0));
            }
            Intent::Invalid("unknown status")
        }
        8 => Intent::Undecodable("truncated json"),
        _ => Intent::Undecodable(if rng.random_bool(0.5) { "invalid utf-8" } else { "not json" }),
    }
}

fn undecodable_bytes(rng: &mut StdRng, how: &str, doc: &Map<String, Value>) -> Vec<u8> {
    let full = serde_json::to_vec(doc).unwrap_or_default();
    match how {
        "truncated json" => full[..full.len() / 2].to_vec(),
        "invalid utf-8" => {
            let mut b = full;
            let at = rng.random_range(1..b.len().max(2) - 1);
            b[at] = 0xFF;
            b
        }
        _ => b"payment_id=42&amount=10.00".to_vec(),
    }
}

/// A decimal as a JSON number. Amounts have two places and stay far below 2^53 cents, so the
/// number prints back exactly as the decimal text.
pub fn number(d: Decimal) -> Value {
    d.to_string().parse::<serde_json::Number>().map(Value::Number).unwrap_or(Value::Null)
}

/// A random (v4-shaped) uuid from the seeded generator.
pub fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid().hyphenated().to_string()
}

/// RFC 3339 with milliseconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::product::{Catalog, Files};

    fn payments() -> std::sync::Arc<Contract> {
        let catalog = Catalog::load(&Files::Embedded).unwrap_or_else(|e| panic!("samples: {e}"));
        let binding = catalog.binding("payments.created").unwrap_or_else(|| panic!("payments.created is bound"));
        binding.contract.clone()
    }

    #[test]
    fn a_key_pool_bounds_the_record_ids_and_follows_the_seed() {
        let contract = payments();
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let ids = |seed| {
            let mut g = Generator::for_contract(&contract, seed, 0.0, 0.0).unwrap_or_else(|| panic!("generator")).with_key_pool(50, seed);
            (0..2_000).map(|_| g.next_event(now).key).collect::<Vec<_>>()
        };
        let a = ids(7);
        let distinct: HashSet<&String> = a.iter().collect();
        assert_eq!(distinct.len(), 50, "2,000 draws from 50 keys reach all of them and no other");
        assert_eq!(a, ids(7), "the same seed gives the same stream");
        assert_ne!(a, ids(8), "another seed another pool");
    }

    #[test]
    fn without_a_pool_every_event_has_a_fresh_id_as_before() {
        let contract = payments();
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let mut plain = Generator::for_contract(&contract, 3, 0.0, 0.0).unwrap_or_else(|| panic!("generator"));
        let mut empty = Generator::for_contract(&contract, 3, 0.0, 0.0).unwrap_or_else(|| panic!("generator")).with_key_pool(0, 3);
        let a: Vec<_> = (0..500).map(|_| plain.next_event(now)).collect();
        let b: Vec<_> = (0..500).map(|_| empty.next_event(now)).collect();
        assert_eq!(a.iter().map(|e| &e.key).collect::<HashSet<_>>().len(), 500);
        assert!(a.iter().zip(&b).all(|(x, y)| x.key == y.key && x.payload == y.payload));
    }
}
