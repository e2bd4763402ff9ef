//! `meshguard contract …`: schema evolution checks between contract versions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::fail;
use crate::contract::diff::{self, Mode};

/// Compatibility mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// NEW must accept every record OLD accepted (consumers upgrade first; Avro: NEW reads OLD data).
    Backward,
    /// OLD must accept every record NEW accepts (producers upgrade first; Avro: OLD reads NEW data).
    Forward,
    /// Both.
    Full,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Backward => Mode::Backward,
            ModeArg::Forward => Mode::Forward,
            ModeArg::Full => Mode::Full,
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A report for people.
    Text,
    /// One JSON document.
    Json,
}

/// Arguments of `contract`.
#[derive(Debug, Args)]
pub struct ContractArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ContractCommand,
}

/// `contract` subcommands.
#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// List every change between two schemas (both JSON Schema or both Avro) and whether it breaks.
    ///
    /// Each change is shown with its path in the record and whom it breaks: "writers" when a
    /// record valid under OLD is rejected under NEW (breaks backward compatibility), "readers"
    /// when a record valid under NEW is not valid under OLD (breaks forward compatibility).
    /// Where JSON Schema compatibility cannot be decided statically (two different patterns,
    /// a changed allOf) the change says "cannot prove compatible" and counts as breaking. Avro
    /// follows the specification's schema-resolution rules.
    ///
    /// Exit status: 0 compatible under the mode, 1 breaking, 2 bad input.
    #[command(after_help = "Examples:\n  \
        meshguard contract diff schemas/payment-schema.json samples/payment-schema-v2-breaking.json\n  \
        meshguard contract diff --mode full --format json schemas/card-transaction-v0.avsc schemas/card-transaction.avsc\n  \
        git show main:schemas/loan-schema.json > /tmp/old.json && meshguard contract diff /tmp/old.json schemas/loan-schema.json")]
    Diff(DiffArgs),
}

/// Arguments of `contract diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Compatibility to keep: backward (default), forward or full.
    #[arg(long, short = 'm', value_enum, default_value = "backward")]
    pub mode: ModeArg,
    /// Report format.
    #[arg(long, short = 'f', value_enum, default_value = "text")]
    pub format: Format,
    /// The schema in force (.json JSON Schema, or .avsc Avro).
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The proposed schema.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
}

pub(super) fn run(args: ContractArgs) -> ExitCode {
    match args.command {
        ContractCommand::Diff(d) => run_diff(d),
    }
}

fn run_diff(args: DiffArgs) -> ExitCode {
    let report = match diff::diff_files(&args.old, &args.new, args.mode.into()) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match args.format {
        Format::Text => print!("{}", diff::render_text(&report)),
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(format!("cannot render the report: {e}")),
        },
    }
    if report.compatible { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
