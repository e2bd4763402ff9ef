//! `meshguard dlq`: the dead-letter topic.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::check::Format;
use super::{ConfigArg, fail};
use crate::replay::{Filter, replay};

/// Arguments of `dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// What to do with the dead letters.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Re-check dead letters against the contract now in force; re-publish those that pass.
    ///
    /// Reads the dead-letter topic (topics.dlq) from its first offset up to its end offsets at
    /// start. Each dead letter is held to the contract bound to its source topic in the catalog
    /// loaded as `run` loads it (--config, MESHGUARD__PRODUCTS__DIR, …), with the same checker as
    /// `check`. One that passes is published to its source topic with its original key, value and
    /// headers plus `meshguard.replayed: 1`, and a receipt (keyed by the dead letter's position) is
    /// written to topics.dlq_replays, so no later run replays it again. A dead letter that carries
    /// `meshguard.replayed` (a replay that failed again) is never replayed: each record is replayed
    /// at most once. With delivery.exactly_once the replays and receipts commit in Kafka
    /// transactions. Dead letters without readable reason headers, without payload, or whose
    /// source topic is no longer bound are skipped and counted by reason. The summary also
    /// counts per product (JSON: `by_product`); the command serves no metrics (it exits before
    /// any scrape): a scheduler that keeps metrics reads them from `--format json`.
    ///
    /// Exit status: 0 when the run completed (whatever still fails is in the summary), 2 on a
    /// usage or configuration error, 1 when Kafka failed (run it again: receipts say what was replayed).
    #[command(after_help = "Examples:\n  \
        meshguard dlq replay --dry-run                              # what would be replayed\n  \
        meshguard dlq replay --product payments-data-product --since 2026-11-29T00:00:00Z\n  \
        meshguard dlq replay --config /etc/meshguard/meshguard.toml --format json")]
    Replay(ReplayArgs),
}

/// Arguments of `dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only dead letters rejected by this data product's contract (header meshguard.product).
    #[arg(long, short = 'p', value_name = "NAME")]
    pub product: Option<String>,
    /// Only dead letters written at or after this instant (RFC 3339, their Kafka timestamp).
    #[arg(long, value_name = "RFC3339", value_parser = instant)]
    pub since: Option<OffsetDateTime>,
    /// Only dead letters written before this instant (RFC 3339, their Kafka timestamp).
    #[arg(long, value_name = "RFC3339", value_parser = instant)]
    pub until: Option<OffsetDateTime>,
    /// Judge and count, publish nothing (no replay, no receipt).
    #[arg(long)]
    pub dry_run: bool,
    /// Summary format.
    #[arg(long, short = 'f', value_enum, default_value = "text")]
    pub format: Format,
}

fn instant(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 instant: {e}"))
}

pub(super) fn run(args: DlqArgs) -> ExitCode {
    match args.command {
        DlqCommand::Replay(args) => replay_command(args),
    }
}

fn replay_command(args: ReplayArgs) -> ExitCode {
    crate::cli::init_logging();
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return fail("--since must be before --until");
    }
    let (settings, catalog) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Some(p) = &args.product
        && catalog.product(p).is_none()
    {
        // Its dead letters may outlive it: they are counted as source_not_bound.
        tracing::warn!(product = %p, "no such data product in the catalog");
    }
    let filter = Filter { product: args.product, since: args.since, until: args.until };
    match replay(&settings, &catalog, &filter, args.dry_run) {
        Ok(summary) => {
            match args.format {
                Format::Text => print!("{}", summary.render_text()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshguard: dlq replay stopped: {e}");
            ExitCode::from(1)
        }
    }
}
