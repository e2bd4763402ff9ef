//! The MariaDB ceiling for reconciliation lookups, beside the reconciler's own path, alternated
//! in one run (docs/benchmarks.md, round 5).
//!
//! ```sh
//! . testcontainers/env
//! cargo run --release --example reconcile_ceiling -- --chunks 1000 --concurrency 4 --rounds 3
//! ```
//!
//! Fills a scratch database (`--database`, default `mg_ceiling`; kept between runs, filled once)
//! with `--rows` payments rows from the repository's migrations, then, for every chunk size and
//! concurrency, alternates `--rounds` times:
//!
//! - **ceiling**: `concurrency` plain loops, each on its own connection, of the very same
//!   `SELECT payment_id, amount, currency FROM payments WHERE payment_id IN (…)` over the same
//!   keys in the same chunks, decoding each row (key, decimal amount, currency) and nothing else;
//! - **reconciler**: [`Reconciler::run`] over claims for the same keys, on
//!   [`MySqlSource`] (the pool, the query and the decoding `meshguard run` uses);
//! - **worker** (`--worker`): the same claims handed to the reconciliation task
//!   ([`Worker`]) in batches of 5,000, as the stream does, until all are decided.
//!
//! It prints lookups (keys) per second for each and the ratio to the ceiling of that round.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rust_decimal::Decimal;
use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, MySql, QueryBuilder, Row};

use meshguard::contract::Contract;
use meshguard::measure::SystemClock;
use meshguard::product::{Catalog, Files};
use meshguard::reconcile::mysql::MySqlSource;
use meshguard::reconcile::worker::{Worker, WorkerSettings};
use meshguard::reconcile::{Claim, Outcome, Reconciler};

#[derive(Debug, Parser)]
struct Args {
    /// The server (any database in the URL; the scratch database is created beside it).
    #[arg(long, env = "MESHGUARD_TEST_MYSQL", default_value = "mysql://root@127.0.0.1:3306/banking")]
    url: String,
    /// Scratch database, created and filled once, kept for the next run.
    #[arg(long, default_value = "mg_ceiling")]
    database: String,
    /// Rows in the source table (the stream benchmark writes 990,007 for 1,000,000 events).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Keys looked up per pass (a random sample of the rows).
    #[arg(long, default_value_t = 200_000)]
    keys: usize,
    /// IN-list sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    chunks: Vec<usize>,
    /// Queries in flight (connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    concurrency: Vec<usize>,
    /// Alternations of ceiling and reconciler per setting.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also measure the reconciliation task (the stream's path: channel, rounds, verdicts).
    #[arg(long)]
    worker: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = database_url(&args.url, &args.database)?;
    let rows = fill(&args, &url).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut sample = rows;
    sample.shuffle(&mut rng);
    sample.truncate(args.keys);
    let contract = payments_contract()?;
    println!("{} keys per pass over {} rows in {}", sample.len(), args.rows, args.database);
    println!(
        "| chunk | concurrency | round | ceiling lookups/s | reconciler lookups/s | reconciler ÷ ceiling |{}",
        if args.worker { " worker lookups/s | worker ÷ ceiling |" } else { "" }
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |{}", if args.worker { " ---: | ---: |" } else { "" });
    for &chunk in &args.chunks {
        for &concurrency in &args.concurrency {
            let mut sums = [0.0_f64; 3];
            for round in 1..=args.rounds {
                let ceiling = ceiling(&url, &sample, chunk, concurrency).await?;
                let reconciler = reconciler(&url, &contract, &sample, chunk, concurrency).await?;
                let worker = if args.worker { Some(worker(&url, &contract, &sample, chunk, concurrency).await?) } else { None };
                sums[0] += ceiling;
                sums[1] += reconciler;
                sums[2] += worker.unwrap_or_default();
                let w = worker.map(|w| format!(" {w:.0} | {:.3} |", w / ceiling)).unwrap_or_default();
                println!("| {chunk} | {concurrency} | {round} | {ceiling:.0} | {reconciler:.0} | {:.3} |{w}", reconciler / ceiling);
            }
            let w = if args.worker { format!(" {:.0} | {:.3} |", sums[2] / args.rounds as f64, sums[2] / sums[0]) } else { String::new() };
            println!(
                "| {chunk} | {concurrency} | mean | {:.0} | {:.0} | {:.3} |{w}",
                sums[0] / args.rounds as f64,
                sums[1] / args.rounds as f64,
                sums[1] / sums[0]
            );
        }
    }
    Ok(())
}

/// `url` with its database replaced by `database`.
fn database_url(url: &str, database: &str) -> Result<String> {
    if !database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("--database must be a plain identifier");
    }
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{database}{}", &base[..host_end], query.map(|q| format!("?{q}")).unwrap_or_default()))
}

/// Creates the scratch database from the migrations and fills it to `--rows`; returns every
/// (key, amount, currency).
async fn fill(args: &Args, url: &str) -> Result<Vec<(String, Decimal, String)>> {
    let server = database_url(&args.url, "mysql")?;
    let mut conn = MySqlConnection::connect(&server).await.context("connecting")?;
    let mut sql = String::new();
    let mut paths: Vec<_> = std::fs::read_dir("migrations/mysql")
        .context("migrations/mysql (run from the repository root)")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    for path in paths {
        sql.push_str(&std::fs::read_to_string(&path).with_context(|| path.display().to_string())?);
    }
    let sql = regex::Regex::new(r"\bbanking\b")?.replace_all(&sql, args.database.as_str()).into_owned();
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.context("migrations")?;
    conn.close().await?;
    let mut conn = MySqlConnection::connect(url).await?;
    let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments").fetch_one(&mut conn).await?;
    let missing = args.rows.saturating_sub(usize::try_from(have).unwrap_or(0));
    if missing > 0 {
        eprintln!("writing {missing} rows to {}.payments", args.database);
        let mut rng = rand::rngs::StdRng::seed_from_u64(have.unsigned_abs());
        let mut left = missing;
        while left > 0 {
            let n = left.min(2000);
            left -= n;
            let mut q: QueryBuilder<MySql> =
                QueryBuilder::new("INSERT INTO payments (payment_id, customer_id, amount, currency, status, created_at) ");
            let _ = q.push_values(0..n, |mut b, _| {
                let id = uuid::Builder::from_random_bytes(rand::Rng::random(&mut rng)).into_uuid().to_string();
                let cents: i64 = rand::Rng::random_range(&mut rng, 1..10_000_000);
                let _ = b
                    .push_bind(id)
                    .push_bind(1_i64)
                    .push_bind(Decimal::new(cents, 2))
                    .push_bind("EUR")
                    .push_bind("COMPLETED")
                    .push_bind(time::PrimitiveDateTime::new(time::macros::date!(2026 - 11 - 29), time::macros::time!(12:00)));
            });
            let _ = q.build().execute(&mut conn).await?;
        }
    }
    let rows = sqlx::query("SELECT payment_id, amount, currency FROM payments").fetch_all(&mut conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    out.sort_unstable();
    out.truncate(args.rows);
    Ok(out)
}

fn payments_contract() -> Result<Arc<Contract>> {
    let catalog = Catalog::load(&Files::Embedded).map_err(|e| anyhow::anyhow!("{e}"))?;
    catalog.product("payments-data-product").and_then(|p| p.contract(None)).cloned().context("the payments contract")
}

/// The keys as the reconciler sends them: in chunks of `chunk`, each sorted.
fn chunks(sample: &[(String, Decimal, String)], chunk: usize) -> Vec<Vec<String>> {
    sample
        .chunks(chunk.max(1))
        .map(|c| {
            let mut keys: Vec<String> = c.iter().map(|(k, _, _)| k.clone()).collect();
            keys.sort_unstable();
            keys
        })
        .collect()
}

/// `concurrency` plain loops of the query, one connection each; keys per second.
async fn ceiling(url: &str, sample: &[(String, Decimal, String)], chunk: usize, concurrency: usize) -> Result<f64> {
    let all = chunks(sample, chunk);
    let mut conns = Vec::new();
    for _ in 0..concurrency.max(1) {
        conns.push(MySqlConnection::connect(url).await?);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let found: Vec<Result<usize>> = futures_util::future::join_all(conns.iter_mut().map(|conn| {
        let all = &all;
        let next = &next;
        async move {
            let mut found = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(keys) = all.get(i) else { break };
                let mut q: QueryBuilder<MySql> =
                    QueryBuilder::new("SELECT payment_id, amount, currency FROM payments WHERE payment_id IN (");
                let mut list = q.separated(", ");
                for k in keys {
                    let _ = list.push_bind(k);
                }
                let _ = q.push(")");
                let rows = q.build().fetch_all(&mut *conn).await?;
                for row in rows {
                    let _key: String = row.try_get(0)?;
                    let _amount: Decimal = row.try_get(1)?;
                    let _currency: String = row.try_get(2)?;
                    found += 1;
                }
            }
            Ok(found)
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let found: usize = found.into_iter().sum::<Result<usize>>()?;
    if found != sample.len() {
        bail!("ceiling found {found} of {} keys", sample.len());
    }
    for conn in conns {
        conn.close().await?;
    }
    Ok(sample.len() as f64 / elapsed.as_secs_f64())
}

fn claims(contract: &Arc<Contract>, sample: &[(String, Decimal, String)]) -> Vec<Claim> {
    let now = time::OffsetDateTime::now_utc();
    sample
        .iter()
        .enumerate()
        .map(|(i, (key, amount, currency))| Claim {
            contract: contract.clone(),
            topic: "payments".into(),
            key: key.clone(),
            amount: *amount,
            currency: Some(currency.clone()),
            first_seen: now,
            next_check: now,
            absent: 0,
            partition: 0,
            offset: i64::try_from(i).unwrap_or(i64::MAX),
        })
        .collect()
}

fn check_all_matched(decided: &[meshguard::reconcile::Decided], expected: usize, who: &str) -> Result<()> {
    let matched = decided.iter().filter(|d| d.outcome == Outcome::Matched).count();
    if matched != expected || decided.len() != expected {
        bail!("{who}: {matched} matched of {} decided, {expected} expected", decided.len());
    }
    Ok(())
}

/// [`Reconciler::run`] on a fresh pool; keys per second (the pool connects inside the timing, as
/// the ceiling's connections do not: the first round pays it, later rounds reuse it).
async fn reconciler(
    url: &str,
    contract: &Arc<Contract>,
    sample: &[(String, Decimal, String)],
    chunk: usize,
    concurrency: usize,
) -> Result<f64> {
    let db = MySqlSource::lazy(url, u32::try_from(concurrency).unwrap_or(u32::MAX), chunk)?;
    // Warm the pool outside the timing (the ceiling connects outside it too).
    let mut warm = Reconciler::new(Duration::from_secs(30), chunk);
    let _ = warm.submit(claims(contract, &sample[..sample.len().min(chunk * concurrency)]));
    let _ = warm.run(&db, time::OffsetDateTime::now_utc(), concurrency).await;
    let mut r = Reconciler::new(Duration::from_secs(30), chunk);
    let _ = r.submit(claims(contract, sample));
    let started = Instant::now();
    let (decided, err) = r.run(&db, time::OffsetDateTime::now_utc(), concurrency).await;
    let elapsed = started.elapsed();
    if let Some(e) = err {
        bail!("reconciler: {e}");
    }
    check_all_matched(&decided, sample.len(), "reconciler")?;
    Ok(sample.len() as f64 / elapsed.as_secs_f64())
}

/// The reconciliation task, fed in batches of 5,000 claims from a plain thread as the stream
/// does; keys per second from the first hand-over to the last verdict.
async fn worker(
    url: &str,
    contract: &Arc<Contract>,
    sample: &[(String, Decimal, String)],
    chunk: usize,
    concurrency: usize,
) -> Result<f64> {
    let db = MySqlSource::lazy(url, u32::try_from(concurrency).unwrap_or(u32::MAX), chunk)?;
    let settings =
        WorkerSettings { grace: Duration::from_secs(30), chunk, concurrency, max_backlog: 50_000, interval: Duration::from_millis(500) };
    let runtime = tokio::runtime::Handle::current();
    let worker = Worker::start(db, settings, Arc::new(SystemClock), &runtime);
    let all = claims(contract, sample);
    let expected = all.len();
    let done = tokio::task::spawn_blocking(move || -> Result<f64> {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let mut decided = Vec::with_capacity(expected);
        let mut batches = all.chunks(5_000).map(<[Claim]>::to_vec).collect::<Vec<_>>().into_iter();
        while decided.len() < expected {
            if let Some(batch) = batches.next() {
                worker.submit(batch, &stop);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
            decided.extend(worker.decided());
            if started.elapsed() > Duration::from_secs(600) {
                bail!("worker: {} of {expected} decided after 600 s", decided.len());
            }
        }
        let elapsed = started.elapsed();
        check_all_matched(&decided, expected, "worker")?;
        Ok(expected as f64 / elapsed.as_secs_f64())
    });
    done.await?
}
