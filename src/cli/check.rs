//! `meshguard check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ConfigArg, fail};
use crate::check::{Checker, Input, Plan, check_input, render_text};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A report for people.
    Text,
    /// One JSON document.
    Json,
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Data product whose contract applies (metadata.name). Needed when several are loaded.
    #[arg(long, short = 'p', value_name = "NAME")]
    pub product: Option<String>,
    /// Contract of the product (default: its first contract).
    #[arg(long, short = 'c', value_name = "NAME")]
    pub contract: Option<String>,
    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value = "text")]
    pub format: Format,
    /// Hold every record to this version of the contract, as a `meshguard.contract.version`
    /// header would (default: the newest enforced version). Shadow versions are checked too.
    #[arg(long, value_name = "VERSION")]
    pub contract_version: Option<String>,
    /// Measure freshness as of this instant (RFC 3339) instead of now, for reproducible reports.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
    /// NDJSON files (one record per line), Avro object container files, or - for stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

pub(super) fn run(args: CheckArgs) -> ExitCode {
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
    let names: Vec<&str> = catalog.products.iter().map(|p| p.name()).collect();
    let product = match (&args.product, catalog.products.as_slice()) {
        (Some(name), _) => match catalog.product(name) {
            Some(p) => p,
            None => return fail(format!("unknown product {name:?}; known products: {}", names.join(", "))),
        },
        (None, [only]) => only,
        (None, _) => return fail(format!("several data products are loaded; choose one with --product ({})", names.join(", "))),
    };
    let Some(contract) = product.contract(args.contract.as_deref()) else {
        let known: Vec<&str> = product.contracts.iter().map(|c| c.name.as_str()).collect();
        return fail(format!(
            "product {:?} has no contract {:?}; its contracts: {}",
            product.name(),
            args.contract.as_deref().unwrap_or_default(),
            known.join(", ")
        ));
    };
    let header = args.contract_version.as_ref().map(|v| v.as_bytes().to_vec());
    let mut checker = match Checker::new(contract, header.as_deref()) {
        Ok(c) => c,
        Err(r) => return fail(r.violations.first().map(|v| v.message.clone()).unwrap_or_default()),
    };
    let contract = checker.contract();
    // Large inputs are spread over the evaluation threads; the report is the same on any number.
    let plan = Plan::new(settings.delivery.evaluators());
    for file in &args.files {
        let input = Input::from_arg(file);
        let name = input.name();
        checker.report.inputs.push(name.clone());
        let notes = match check_input(&mut checker, &input, now, plan) {
            Ok(notes) => notes,
            Err(e) => return fail(e),
        };
        if notes.json_for_avro {
            eprintln!(
                "meshguard: note: {name} looks like JSON text, but contract {:?} is Avro: give an Avro object container file",
                contract.name
            );
        }
    }
    let report = checker.finish();
    match args.format {
        Format::Text => print!("{}", render_text(&report)),
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(format!("cannot render the report: {e}")),
        },
    }
    if report.invalid == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
