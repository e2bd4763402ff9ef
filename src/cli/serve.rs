//! `meshguard serve`: the data product REST API.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tracing::{info, warn};

use super::{ConfigArg, fail};
use crate::api::auth::Authenticator;
use crate::api::reload::Swap;
use crate::api::routes::Ops;
use crate::api::server::Limits;
use crate::api::{AnonymousLimiter, Api};
use crate::sink::catalog::{Poll, describe};
use crate::sink::mongo::MongoSink;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Development only: accept every request without credentials, as user `dev` (with the
    /// role of --dev-role, if any). Never use in production.
    #[arg(long)]
    pub insecure_dev: bool,
    /// With --insecure-dev: the role of user `dev` (none by default: every product route is 403).
    #[arg(long, value_name = "ROLE", requires = "insecure_dev")]
    pub dev_role: Option<String>,
}

pub(super) fn run(args: ServeArgs) -> ExitCode {
    crate::cli::init_logging();
    let settings = match args.config.settings() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let auth = match Authenticator::from_settings(&settings.auth) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let auth = if args.insecure_dev {
        warn!(role = ?args.dev_role, "--insecure-dev: every request is user \"dev\"; no credential is checked");
        auth.insecure_dev(args.dev_role.clone())
    } else if !auth.is_configured() {
        return fail(
            "no credentials configured: set auth.jwt_hs256_secret (MESHGUARD__AUTH__JWT_HS256_SECRET), auth.jwt_public_key_file, \
             auth.jwks_url and/or auth.api_keys, or pass --insecure-dev for local development",
        );
    } else {
        auth
    };
    let (metrics, runtime) = match super::service_runtime() {
        Ok(started) => started,
        Err(code) => return code,
    };
    let (catalog, watch) = match super::service_catalog(&args.config, &settings, &runtime) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let names: Vec<String> = catalog.products.iter().map(|p| p.name().to_owned()).collect();
    let sink = match runtime.block_on(MongoSink::connect(&settings.mongodb.uri, &settings.mongodb.database, &names)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meshguard: cannot connect to MongoDB: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(auth.prefetch());
    let auth = Arc::new(auth);
    // One per process, not per revision: a catalog switch must not refill a flooder's bucket.
    let limiter = Arc::new(AnonymousLimiter::new(settings.api.anonymous_per_second, settings.api.anonymous_burst));
    // One API per catalog revision; the listeners' routers are swapped whole (`api::reload`).
    let build = {
        let (db, settings) = (sink.database().clone(), settings.clone());
        move |catalog| {
            let api = Arc::new(Api::new(catalog, db.clone(), auth.clone(), limiter.clone(), Some(metrics.clone()), &settings.api));
            let routers = match settings.api.ops_addr {
                None => vec![api.clone().router(Ops::OnApiPort)],
                Some(_) => vec![api.clone().router(Ops::Separate), api.clone().ops_router()],
            };
            (api, routers)
        }
    };
    let (api, routers) = build(catalog);
    let swap = Swap::new(routers);
    let mut listeners = vec![(settings.api.addr, swap.router(0))];
    if let Some(ops) = settings.api.ops_addr {
        listeners.push((ops, swap.router(1)));
    }
    info!(addr = %settings.api.addr, ops_addr = ?settings.api.ops_addr, aliases = api.aliases().len(), "data product API listening");
    drop(api);
    let watcher = watch.map(|mut watch| {
        let every = Duration::from_millis(settings.products.reload_interval_ms.max(100));
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let _ = ticks.tick().await;
            loop {
                let _ = ticks.tick().await;
                if let Poll::Switched(loaded) = watch.poll(&sink).await {
                    let (api, routers) = build(loaded.catalog);
                    swap.replace(routers);
                    info!(revisions = %describe(watch.current()), aliases = api.aliases().len(), "serving the new catalog revision");
                }
            }
        })
    });
    let served = runtime.block_on(crate::api::serve(listeners, Limits::from(&settings.api), shutdown_signal()));
    if let Some(w) = watcher {
        w.abort();
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshguard: {e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    super::shutdown_signal().await;
    info!("shutdown requested");
}
