//! `meshguard run`: the streaming service.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{error, info, warn};

use super::{ConfigArg, fail};
use crate::config::Settings;
use crate::measure::SystemClock;
use crate::telemetry::http::Health;

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Partitions of side topics meshguard creates when they do not exist (0: do not create).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub side_topic_partitions: i32,
}

pub(super) fn run(args: RunArgs) -> ExitCode {
    crate::cli::init_logging();
    let settings = match args.config.settings() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (metrics, runtime) = match super::service_runtime() {
        Ok(started) => started,
        Err(code) => return code,
    };
    let (catalog, watch) = match super::service_catalog(&args.config, &settings, &runtime) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    // The catalog in MongoDB: the stream switches to a new revision between batches; the
    // threads beside it follow.
    let catalog = Arc::new(catalog);
    let current = Arc::new(crate::stream::reload::Current::new(catalog.clone()));
    let reload = match watch {
        None => None,
        Some(watch) => {
            match runtime.block_on(crate::sink::mongo::MongoSink::connect(&settings.mongodb.uri, &settings.mongodb.database, &[])) {
                Ok(store) => Some(crate::stream::reload::Reload::new(
                    current.clone(),
                    watch,
                    store,
                    runtime.handle().clone(),
                    Duration::from_millis(settings.products.reload_interval_ms.max(100)),
                    catalog.topics(),
                )),
                Err(e) => return fail(format!("cannot connect to MongoDB: {e}")),
            }
        }
    };
    // Wrong credentials or certificates end the process here, before any client retries them.
    if let Err(e) = crate::source::kafka::check_connection(&settings, Duration::from_secs(10)) {
        return fail(e.message);
    }
    if settings.mysql.enabled
        && let Err(e) = runtime.block_on(crate::reconcile::mysql::check_credentials(&settings.mysql.url))
    {
        return fail(e.message);
    }
    crate::telemetry::register_run_error_series(settings.mongodb.enabled, settings.mysql.enabled);
    if args.side_topic_partitions > 0
        && let Err(e) = runtime.block_on(ensure_side_topics(&settings, args.side_topic_partitions))
    {
        return fail(e);
    }
    let health = Arc::new(Health::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = runtime.spawn(crate::telemetry::http::serve(settings.http.addr, metrics, health.clone(), async move {
        let _ = http_stop_rx.await;
    }));

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // One OpenLineage run per instance, shared by the stream and the quality owner beside it.
    let lineage_run = crate::lineage::openlineage::Run::new(
        "meshguard",
        format!("meshguard.{}", settings.kafka.group_id),
        time::OffsetDateTime::now_utc(),
    );
    let stream = {
        let (settings, health, stop, run) = (settings.clone(), health.clone(), stop.clone(), lineage_run.clone());
        let handle = runtime.handle().clone();
        std::thread::Builder::new().name("stream".into()).spawn(move || {
            let env = crate::stream::Env { clock: Arc::new(SystemClock), health, stop, runtime: handle, run };
            let r = crate::stream::run(&settings, &catalog, env, reload);
            let _ = done_tx.send(());
            r
        })
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot start the stream thread: {e}")),
    };
    // Group-wide quality: this instance may own some bindings' windows (by partition of the
    // partials topic); the owner runs beside the stream and stops with it.
    let owner = if settings.quality.scope == crate::config::QualityScope::Group {
        if settings.scan.interval_ms > 0 {
            let (_, catalog) = current.get();
            let sources: Vec<String> = crate::stream::scheduled::sources_of(&catalog, &settings).into_values().map(|s| s.label).collect();
            info!(interval_ms = settings.scan.interval_ms, sources = ?sources, "scheduled scans of bound tables and collections");
        }
        let (settings, health, stop, current, run) = (settings.clone(), health.clone(), stop.clone(), current.clone(), lineage_run.clone());
        let handle = runtime.handle().clone();
        match beside("quality-owner", "group-wide quality owner", move || {
            let env = crate::stream::Env { clock: Arc::new(SystemClock), health, stop, runtime: handle, run };
            crate::stream::owner::run(&settings, &current, env)
        }) {
            Ok(t) => Some(t),
            Err(code) => return code,
        }
    } else {
        None
    };
    // The document store fed from Kafka: the materializer runs beside the stream and drains
    // once the stream has stopped.
    let drain = Arc::new(AtomicBool::new(false));
    let materializer = if settings.mongodb.enabled && settings.mongodb.materialize == crate::config::Materialize::Kafka {
        let settings = settings.clone();
        let env = crate::stream::materialize::Env { drain: drain.clone(), runtime: runtime.handle().clone(), health: health.clone() };
        match beside("materializer", "materializer", move || crate::stream::materialize::run(&settings, &env)) {
            Ok(t) => Some(t),
            Err(code) => return code,
        }
    } else {
        None
    };
    info!(addr = %settings.http.addr, "metrics, /healthz and /readyz listening");

    // Wait for a signal, or for the stream to end by itself (a fatal error).
    let signalled = runtime.block_on(async {
        let done = tokio::task::spawn_blocking(move || done_rx.recv());
        tokio::select! {
            _ = super::shutdown_signal() => true,
            _ = done => false,
        }
    });
    if signalled {
        info!("shutdown requested; draining the current batch");
    }
    stop.store(true, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_millis(settings.delivery.shutdown_timeout_ms);
    let drained = finished_by(&stream, deadline);
    let _ = http_stop_tx.send(());
    if !drained {
        error!("the stream did not drain within delivery.shutdown_timeout_ms; exiting without a final commit");
        // Not a return: dropping the runtime would wait for the stream's blocking work (e.g. a
        // transaction call hanging on a restarted broker), so the process would outlive the
        // timeout. Offsets of the undrained batch are not committed: it is replayed.
        std::process::exit(1);
    }
    let result = stream.join();
    // The owner stops with the stream, within the same deadline: a thread parked in a Kafka
    // transaction call after a broker restart (librdkafka#5456, see src/sink/kafka.rs) would
    // otherwise hold the exit until the transaction watchdog, two minutes on (the fault harness
    // caught a SIGTERMed instance still running after 60 s). Its windows resume from the
    // committed partials at the next start.
    if let Some(owner) = owner {
        if !finished_by(&owner, deadline) {
            error!("the group-wide quality owner did not stop within delivery.shutdown_timeout_ms; exiting");
            std::process::exit(1);
        }
        let _ = owner.join();
    }
    // What the stream produced is written before the process ends (bounded by
    // delivery.shutdown_timeout_ms; what is left is written by the next start). The materializer
    // drains within that time by itself; a write it is blocked in gets 5 s more.
    drain.store(true, Ordering::Relaxed);
    if let Some(materializer) = materializer {
        let timeout = Duration::from_millis(settings.delivery.shutdown_timeout_ms) + Duration::from_secs(5);
        if !finished_by(&materializer, std::time::Instant::now() + timeout) {
            error!("the materializer did not stop within delivery.shutdown_timeout_ms + 5 s; exiting (the next start writes what is left)");
            std::process::exit(1);
        }
        let _ = materializer.join();
    }
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => fail(e.message),
        Err(_) => fail("the stream thread panicked"),
    }
}

/// Waits until `thread` has finished or `deadline` has passed; whether it finished.
fn finished_by<T>(thread: &std::thread::JoinHandle<T>, deadline: std::time::Instant) -> bool {
    while !thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    thread.is_finished()
}

/// Runs `work` on a thread of its own beside the stream (`what` names it in the logs); an error
/// it ends with is logged, a thread that cannot start ends `run`.
fn beside(
    name: &str,
    what: &'static str,
    work: impl FnOnce() -> Result<(), crate::error::Error> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, ExitCode> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(e) = work() {
                error!(error = %e.message, "{what} stopped");
            }
        })
        .map_err(|e| fail(format!("cannot start the {what} thread: {e}")))
}

/// Creates the side topics if they do not exist (replication 1 on a single broker, else 3).
async fn ensure_side_topics(settings: &Settings, partitions: i32) -> Result<(), String> {
    let config = rdkafka::ClientConfig::from_iter(settings.kafka_properties(crate::config::KafkaClient::Admin));
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| format!("cannot create the Kafka admin client: {e}"))?;
    let result = create_missing(&admin, settings, partitions).await;
    // Dropping an AdminClient joins its polling thread, which polls with a 100 ms time-out: a
    // tenth of a second of every start (docs/benchmarks.md, round 4). It ends in the background.
    let _ = std::thread::Builder::new().name("admin-drop".into()).spawn(move || drop(admin));
    result
}

async fn create_missing(admin: &AdminClient<DefaultClientContext>, settings: &Settings, partitions: i32) -> Result<(), String> {
    // Only these topics' metadata, not the whole cluster's.
    let group = settings.quality.scope == crate::config::QualityScope::Group;
    let mut names = vec![&settings.topics.dlq, &settings.topics.alerts, &settings.topics.lineage];
    if group {
        names.extend([&settings.topics.partials, &settings.topics.quality_state, &settings.topics.claims]);
    }
    if settings.mongodb.enabled && settings.mongodb.materialize == crate::config::Materialize::Kafka {
        names.push(&settings.topics.records);
    }
    let mut brokers = 0;
    let mut absent = Vec::new();
    for name in names {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(10))
            .map_err(|e| format!("cannot reach Kafka at {}: {e}", settings.kafka.bootstrap_servers))?;
        brokers = metadata.brokers().len();
        if !metadata.topics().iter().any(|t| t.name() == name.as_str() && t.error().is_none()) {
            absent.push(name);
        }
    }
    let replication = if brokers >= 3 { 3 } else { 1 };
    // The state and claims topics keep the last value of each key: compacted.
    let missing: Vec<NewTopic<'_>> = absent
        .iter()
        .map(|n| {
            let topic = NewTopic::new(n, partitions, TopicReplication::Fixed(replication));
            if **n == settings.topics.quality_state || **n == settings.topics.claims {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let results = admin
        .create_topics(missing.iter(), &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))))
        .await
        .map_err(|e| format!("cannot create side topics: {e}"))?;
    for r in results {
        match r {
            Ok(name) => info!(topic = %name, partitions, replication, "created side topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => info!(topic = %name, "side topic exists"),
            Err((name, code)) => warn!(topic = %name, error = %code, "cannot create side topic; writes will fail until it exists"),
        }
    }
    Ok(())
}
