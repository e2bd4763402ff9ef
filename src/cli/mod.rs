//! The command line: parse, dispatch, map failures to exit codes (0 ok, 1 findings, 2 usage or
//! configuration error).

mod catalog;
mod check;
mod contract;
mod dlq;
mod lint;
mod produce;
mod run;
mod scan;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// meshguard holds every event of a data mesh to its data contract.
///
/// Domain teams declare data products in YAML (config/products/*.yaml): sources, contracts
/// (JSON Schema or Avro) with quality SLAs, access roles, APIs and lineage. meshguard validates
/// events against those contracts, measures completeness and freshness, and reports.
#[derive(Debug, Parser)]
#[command(name = "meshguard", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:\n  \
    meshguard check --product payments-data-product samples/payments.ndjson\n  \
    meshguard check --product cards-data-product --format json samples/cards.avro\n  \
    meshguard lint --config config\n  \
    meshguard lint --against main                    # fail on breaking schema changes since main\n  \
    meshguard contract diff schemas/payment-schema.json samples/payment-schema-v2-breaking.json\n  \
    meshguard contract export --format odcs loans-data-product > loans.odcs.yaml\n  \
    meshguard contract import odcs loans.odcs.yaml --config /tmp/imported/config\n  \
    meshguard catalog apply                          # lint, then store the products' revisions in MongoDB\n  \
    meshguard dlq replay --dry-run                   # which dead letters the contract now accepts\n  \
    meshguard scan --product payments-data-product   # hold the bound MySQL table to its contract\n\n\
    Configuration: embedded defaults, then --config FILE, then MESHGUARD__SECTION__KEY variables.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate NDJSON or Avro files against a data contract, with no servers.
    ///
    /// Every line (NDJSON) or record (Avro object container file) is decoded, validated against
    /// the contract's schema, and measured for completeness and freshness. NDJSON is judged in
    /// chunks on `delivery.evaluation_threads` threads (0 = one per CPU;
    /// MESHGUARD__DELIVERY__EVALUATION_THREADS=1 for one): the report is the same on any number.
    /// Exit status: 0 when every record is valid, 1 when some are not, 2 on a usage or
    /// configuration error.
    Check(check::CheckArgs),
    /// Load every data product and compile every contract; report each problem as file:line.
    Lint(lint::LintArgs),
    /// Generate realistic events for a topic (to Kafka, or to a file with --output).
    ///
    /// The topic's bound contract decides the event shape (payments, loans, cards). A share of
    /// events is broken on purpose (--invalid-ratio): missing fields, bad formats, wrong types,
    /// undecodable bytes. With --mysql the valid events' source rows are written first, a share
    /// of them with a different amount (--mismatch-ratio), so reconciliation has a truth.
    Produce(produce::ProduceArgs),
    /// Run the streaming service: a Kafka consumer group holding every event to its contract.
    ///
    /// Subscribes to every topic the data products declare, validates each record, writes
    /// rejected records to the dead-letter topic with the reason in headers, and commits offsets
    /// only after the dead letters are acknowledged. Serves /metrics, /healthz and /readyz on
    /// http.addr. SIGTERM or Ctrl-C drains the current batch, commits and exits.
    ///
    /// With scan.interval_ms > 0 (MESHGUARD__SCAN__INTERVAL_MS=60000), the bound MySQL tables
    /// and MongoDB collections are scanned on that schedule too: the rows changed since the last
    /// scan, counted in the source's quality windows and alerts (source `mysql:<table>` or
    /// `mongodb:<collection>`), by one instance of the group.
    Run(run::RunArgs),
    /// Serve the data product REST API (authenticated, authorized and audited) on api.addr.
    ///
    /// Reads the record stores, lineage, quality windows and alerts that `run` writes to
    /// MongoDB. Refuses to start without credentials configured (auth.jwt_hs256_secret or
    /// auth.api_keys) unless --insecure-dev is given. OpenAPI document at /openapi.json.
    Serve(serve::ServeArgs),
    /// Mint a short-lived API token (HS256, auth.jwt_hs256_secret) for a user and roles.
    Token(token::TokenArgs),
    /// Contracts as documents: `diff` two schema versions, `export`/`import` ODCS v3.1.
    ///
    /// `contract diff OLD NEW` lists every schema change and whether it breaks writers or
    /// readers; `contract export --format odcs PRODUCT [CONTRACT]` writes an ODCS document;
    /// `contract import odcs FILE` turns one into a data product that `lint` accepts.
    Contract(contract::ContractArgs),
    /// The catalog in MongoDB: `apply` lints config/ and stores each product's new revision;
    /// `diff` tells what apply would change; `list` and `show NAME` read it back.
    ///
    /// With products.source = "mongodb", `serve` and `run` read this catalog and switch to a new
    /// revision without a restart. `meshguard catalog --help` explains revisions and retirement.
    Catalog(catalog::CatalogArgs),
    /// The dead-letter topic: `dlq replay` re-checks dead letters against the contract in force
    /// and re-publishes those that pass to their source topic, once.
    Dlq(dlq::DlqArgs),
    /// Hold the data at rest to its contract: read each bound MySQL table or MongoDB collection
    /// and report as `check` does.
    ///
    /// A contract is bound to a table or collection of its product's `spec.sources` by the
    /// contract key `source:` (`source: {mysql: {table: loans, keyColumn: loan_id,
    /// eventTimeColumn: updated_at}}` or `source: {mongodb: {collection: …, keyField: …,
    /// eventTimeField: …}}`); a product that binds none takes the one table or collection named
    /// after each contract (payments: `payment-schema` → table `payments`,
    /// `payment-analytics-schema` → collection `payment_analytics`).
    ///
    /// Tables are read from the database of mysql.url in pages by their unique key
    /// (`WHERE key > ? ORDER BY key LIMIT n`), collections from spec.sources.mongodb.database
    /// at mongodb.uri through one cursor, a page per batch; memory holds about three pages. Each row becomes a
    /// record of the columns the contract names: DECIMAL as its exact digits, DATETIME and
    /// TIMESTAMP as RFC 3339 UTC, NULL as null where the contract requires the field (reported)
    /// and as an absent field where it does not. The report is `check`'s, with violations by
    /// path and keyword listing the records' keys, plus the source's freshness: now − its newest
    /// event time, against the contract's SLA.
    ///
    /// Exit status: 0 when every record is valid, 1 when some are not, 2 on a usage or
    /// configuration error: a table or collection that does not exist, a column the contract
    /// requires that the table lacks, an unreachable server (one line naming it).
    ///
    /// `run` scans the bound tables and collections on a schedule with scan.interval_ms > 0 (see
    /// `run --help`).
    #[command(after_help = "Examples:\n  \
        meshguard scan --product payments-data-product --source payments\n  \
        meshguard scan --product loans-data-product --format json\n  \
        MESHGUARD__MYSQL__URL=mysql://root@127.0.0.1:3306/banking meshguard scan --source loans")]
    Scan(scan::ScanArgs),
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Token(args) => token::run(args),
        Command::Contract(args) => contract::run(args),
        Command::Catalog(args) => catalog::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Scan(args) => scan::run(args),
    }
}

/// A usage or configuration failure: printed, exit 2.
pub(crate) fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("meshguard: {message}");
    ExitCode::from(2)
}

/// `--config FILE` shared by commands that read settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Settings file (TOML) layered over the embedded defaults; MESHGUARD__SECTION__KEY
    /// environment variables override both.
    #[arg(long, value_name = "FILE", env = "MESHGUARD_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Structured logs to stderr; `RUST_LOG` filters (default `info`), `MESHGUARD_LOG_FORMAT=json`
/// switches to JSON lines.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if std::env::var("MESHGUARD_LOG_FORMAT").is_ok_and(|v| v == "json") { builder.json().try_init() } else { builder.try_init() };
}

impl ConfigArg {
    /// Loads the settings, or prints why not (exit 2).
    pub(crate) fn settings(&self) -> Result<crate::config::Settings, ExitCode> {
        crate::config::Settings::load(self.config.as_deref()).map_err(fail)
    }

    /// Loads the settings and every data product, or prints why not (exit 2).
    pub(crate) fn load(&self) -> Result<(crate::config::Settings, crate::product::Catalog), ExitCode> {
        let settings = crate::config::Settings::load(self.config.as_deref()).map_err(fail)?;
        let files = crate::product::Files::from_settings(&settings, self.config.is_some());
        let catalog = crate::product::Catalog::load(&files)
            .map_err(|e| fail(format!("cannot load data products from {}:\n{e}", files.describe())))?;
        Ok((settings, catalog))
    }
}

/// The catalog `run` and `serve` start with: from files (`products.source = "files"`), or
/// the one applied to MongoDB `data_products`, with the watch that follows its revisions.
pub(crate) fn service_catalog(
    config: &ConfigArg,
    settings: &crate::config::Settings,
    runtime: &tokio::runtime::Runtime,
) -> Result<(crate::product::Catalog, Option<crate::sink::catalog::CatalogWatch>), ExitCode> {
    use crate::config::ProductsSource;
    if settings.products.source == ProductsSource::Files {
        return config.load().map(|(_, catalog)| (catalog, None));
    }
    let loaded = runtime.block_on(async {
        let store = crate::sink::mongo::MongoSink::connect(&settings.mongodb.uri, &settings.mongodb.database, &[])
            .await
            .map_err(|e| format!("products.source = \"mongodb\": cannot connect to MongoDB: {e}"))?;
        crate::sink::catalog::load(&store).await.map_err(|e| format!("products.source = \"mongodb\": {e}"))
    });
    match loaded {
        Ok(loaded) => {
            tracing::info!(revisions = %crate::sink::catalog::describe(&loaded.revisions), "catalog read from MongoDB data_products");
            let watch = crate::sink::catalog::CatalogWatch::new(&loaded);
            Ok((loaded.catalog, Some(watch)))
        }
        Err(message) => Err(fail(message)),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// What `run` and `serve` both start with: the Prometheus recorder and a two-worker runtime.
pub(crate) fn service_runtime() -> Result<(metrics_exporter_prometheus::PrometheusHandle, tokio::runtime::Runtime), ExitCode> {
    let metrics = crate::telemetry::install().map_err(|e| fail(format!("cannot install metrics: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))?;
    Ok((metrics, runtime))
}
