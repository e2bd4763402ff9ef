//! `meshguard produce`: the event generator standing in for the domain services.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ConfigArg, fail};
use crate::generate::{CardFraming, Generator, container_record, container_schema};

/// Arguments of `produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to publish to; its bound contract decides what is generated.
    #[arg(long, short = 't', value_name = "TOPIC")]
    pub topic: String,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How many events.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub count: u64,
    /// Share of events that break the contract or cannot be decoded (0–1).
    #[arg(long, default_value_t = 0.01)]
    pub invalid_ratio: f64,
    /// Share of valid events whose source row (with --mysql) has a different amount (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub mismatch_ratio: f64,
    /// Share of the source rows (with --mysql) written to break the contract at rest: their
    /// status is outside the contract's enum ("LOST"), for `meshguard scan` and scheduled scans
    /// to report (0–1; exactly that share, every row counted).
    #[arg(long, default_value_t = 0.0)]
    pub bad_row_ratio: f64,
    /// Draw record ids from a pool of this many keys, so that events update records already
    /// sent (e.g. `-n 1000000 --keys 100000`: each record about 10 versions); 0 gives every
    /// event a fresh id. The pool follows from --seed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keys: usize,
    /// Seed of the generator, for reproducible streams.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stamp events around this instant (RFC 3339) instead of the current time.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Write to this file instead of Kafka: NDJSON, or an Avro container file for Avro
    /// contracts when the name ends in .avro.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write each valid event's source row to this MySQL/MariaDB database.
    #[arg(long, value_name = "URL")]
    pub mysql: Option<String>,
    /// Avro framing of card events.
    #[arg(long, value_enum, default_value = "mixed")]
    pub card_framing: CardFraming,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// The key pool for `--keys`: never larger than the events sent (a pool entry no event can
/// draw would only cost memory).
fn pool_size(keys: usize, count: u64) -> usize {
    usize::try_from(count).map_or(keys, |c| keys.min(c))
}

/// The status of a source row written to break the contract at rest (`--bad-row-ratio`): no
/// shipped contract's status enum has it, and it fits the tables' VARCHAR(16).
const BAD_STATUS: &str = "LOST";

pub(super) fn run(args: ProduceArgs) -> ExitCode {
    let (settings, catalog) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let Some(binding) = catalog.binding(&args.topic) else {
        return fail(format!("topic {:?} is not bound to any contract; bound topics: {}", args.topic, catalog.topics().join(", ")));
    };
    let contract = binding.contract.clone();
    let Some(generator) = Generator::for_contract(&contract, args.seed, args.invalid_ratio, args.mismatch_ratio) else {
        return fail(format!("no generator for contract {:?}", contract.name));
    };
    let mut generator = generator.with_card_framing(args.card_framing).with_key_pool(pool_size(args.keys, args.count), args.seed);
    let fixed_now = match &args.now {
        None => None,
        Some(s) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => Some(t),
            Err(e) => return fail(format!("--now {s:?} is not an RFC 3339 instant: {e}")),
        },
    };
    let now = || fixed_now.unwrap_or_else(OffsetDateTime::now_utc);

    if let Some(path) = &args.output {
        if contract.is_avro() && path.extension().and_then(|e| e.to_str()) == Some("avro") {
            return write_container(path, &mut generator, args.count, args.invalid_ratio, now());
        }
        return write_ndjson(path, &mut generator, args.count, &now);
    }

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let mysql = match &args.mysql {
        None => None,
        Some(url) => match runtime.block_on(crate::generate::mysql::SourceWriter::connect(url, &contract)) {
            Ok(w) => Some(w),
            Err(e) => return fail(e.message),
        },
    };
    let config = rdkafka::ClientConfig::from_iter(settings.kafka_properties(crate::config::KafkaClient::Generator));
    let producer: ThreadedProducer<DefaultProducerContext> = match config.create() {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot create the Kafka producer: {e}")),
    };
    let start = Instant::now();
    let (mut valid, mut invalid) = (0u64, 0u64);
    // Events are generated a chunk ahead and the chunk's source rows written first, so a row is in
    // the database before its event can be consumed (reconciliation normally finds it at once). At
    // a fixed rate a chunk is 50 ms of events, so event times stay close to their send times.
    let chunk = if args.rate > 0 { (args.rate / 20).clamp(1, 500) } else { 500 };
    let bad_ratio = args.bad_row_ratio.clamp(0.0, 1.0);
    let mut rows_written = 0u64;
    let mut i = 0u64;
    while i < args.count {
        let n = chunk.min(args.count - i);
        let events: Vec<_> = (0..n).map(|_| generator.next_event(now())).collect();
        if let Some(w) = &mysql {
            let mut rows: Vec<_> = events.iter().filter_map(|e| e.source.clone()).collect();
            for row in &mut rows {
                // Row n is bad when it takes the count of bad rows to the next whole number.
                let n = rows_written as f64;
                if ((n + 1.0) * bad_ratio).floor() > (n * bad_ratio).floor() {
                    row.status = BAD_STATUS.to_owned();
                }
                rows_written += 1;
            }
            if !rows.is_empty()
                && let Err(e) = runtime.block_on(w.write(&rows))
            {
                return fail(e.message);
            }
        }
        for event in events {
            if args.rate > 0 {
                let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            if event.intent.is_valid() {
                valid += 1
            } else {
                invalid += 1
            }
            let mut record = BaseRecord::to(&args.topic).key(event.key.as_bytes()).payload(&event.payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return fail(format!("cannot send to {}: {e}", args.topic)),
                }
            }
            i += 1;
        }
    }
    if let Err(e) = producer.flush(Duration::from_secs(60)) {
        return fail(format!("not every event was delivered: {e}"));
    }
    eprintln!(
        "produced {} events to {} ({valid} valid, {invalid} invalid) in {:.2}s",
        args.count,
        args.topic,
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn write_ndjson(path: &PathBuf, generator: &mut Generator, count: u64, now: &dyn Fn() -> OffsetDateTime) -> ExitCode {
    let file = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    let mut out = std::io::BufWriter::new(file);
    for _ in 0..count {
        let event = generator.next_event(now());
        if out.write_all(&event.payload).and_then(|()| out.write_all(b"\n")).is_err() {
            return fail(format!("{}: write failed", path.display()));
        }
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{}: {e}", path.display())),
    }
}

fn write_container(path: &PathBuf, generator: &mut Generator, count: u64, invalid_ratio: f64, now: OffsetDateTime) -> ExitCode {
    use rand::Rng;
    let Some(schema) = container_schema() else {
        return fail("the built-in card schemas do not parse");
    };
    let file = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    let mut writer = match apache_avro::Writer::new(schema, file) {
        Ok(w) => w,
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    for _ in 0..count {
        let invalid = generator.rng().random_bool(invalid_ratio.clamp(0.0, 1.0));
        let record = container_record(generator.rng(), now, invalid);
        if let Err(e) = writer.append_value(record) {
            return fail(format!("{}: {e}", path.display()));
        }
    }
    match writer.flush() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(format!("{}: {e}", path.display())),
    }
}
