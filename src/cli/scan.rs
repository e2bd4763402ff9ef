//! `meshguard scan`.

use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::check::Format;
use super::{ConfigArg, fail};
use crate::check::render_text;
use crate::scan::{DEFAULT_PAGE_SIZE, Reader, Servers, scan};

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Scan only this data product's bound sources (metadata.name).
    #[arg(long, short = 'p', value_name = "NAME")]
    pub product: Option<String>,
    /// Scan only the bound table or collection of this name.
    #[arg(long, short = 's', value_name = "TABLE|COLLECTION")]
    pub source: Option<String>,
    /// Report format (json: an array with one report per scanned source).
    #[arg(long, short = 'f', value_enum, default_value = "text")]
    pub format: Format,
    /// Rows or documents per page (memory holds about three pages).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
    /// Measure freshness as of this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub(super) fn run(args: ScanArgs) -> ExitCode {
    let (settings, catalog) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let now = match &args.now {
        None => OffsetDateTime::now_utc(),
        Some(s) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => t,
            Err(e) => return fail(format!("--now {s:?} is not an RFC 3339 instant: {e}")),
        },
    };
    let products: Vec<&crate::product::Product> = match &args.product {
        Some(name) => match catalog.product(name) {
            Some(p) => vec![p],
            None => {
                let names: Vec<&str> = catalog.products.iter().map(|p| p.name()).collect();
                return fail(format!("unknown product {name:?}; known products: {}", names.join(", ")));
            }
        },
        None => catalog.products.iter().collect(),
    };
    let bound: Vec<_> =
        products.iter().flat_map(|p| &p.contracts).filter_map(|c| c.source.as_ref().map(|b| (c.clone(), b.clone()))).collect();
    let chosen: Vec<_> = bound.iter().filter(|(_, b)| args.source.as_ref().is_none_or(|s| b.at.name() == s)).collect();
    if chosen.is_empty() {
        let known: Vec<String> = bound.iter().map(|(c, b)| format!("{} ({} / {})", b.at.name(), c.product, c.name)).collect();
        return match &args.source {
            Some(s) if !known.is_empty() => {
                fail(format!("no contract is bound to a source named {s:?}; bound sources: {}", known.join(", ")))
            }
            _ => fail("no contract is bound to a table or collection (contract key `source:`, see docs/design.md)"),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let servers = Servers { mysql_url: settings.mysql.url.clone(), mongodb_uri: settings.mongodb.uri.clone() };
    // Every binding is checked against its server before any is read.
    let mut readers = Vec::with_capacity(chosen.len());
    for (contract, binding) in &chosen {
        match runtime.block_on(Reader::open(contract, binding, &servers, args.page_size)) {
            Ok(r) => readers.push(r),
            Err(e) => return fail(e.message),
        }
    }
    let mut reports = Vec::with_capacity(readers.len());
    for ((contract, binding), reader) in chosen.iter().zip(readers) {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{} / {}", binding.at.describe(), contract.name));
        let progress = |n: u64| {
            bar.set_position(n);
            bar.tick();
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} records ({per_sec})") {
            bar.set_style(style);
        }
        let scanned = scan(&runtime, contract, binding, reader, now, progress);
        bar.finish_and_clear();
        match scanned {
            Ok(report) => reports.push(report),
            Err(e) => return fail(e.message),
        }
    }
    match args.format {
        Format::Text => {
            for r in &reports {
                print!("{}", render_text(r));
            }
        }
        Format::Json => match serde_json::to_string_pretty(&reports) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(format!("cannot render the report: {e}")),
        },
    }
    if reports.iter().all(|r| r.invalid == 0) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
