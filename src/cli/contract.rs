//! `meshguard contract …`: schema evolution checks between contract versions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::{ConfigArg, fail};
use crate::contract::diff::{self, Mode};
use crate::product::odcs::{self, ImportDefaults};

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
    /// Write a contract of a data product as an ODCS v3.1 document (YAML, to stdout).
    ///
    /// The document carries the schema as ODCS properties and verbatim (custom property
    /// meshguardSchema), freshness as the `latency` SLA property, completeness and accuracy as
    /// quality checks, the business rules as custom CEL checks, the owner, roles and topics.
    #[command(after_help = "Examples:\n  \
        meshguard contract export --format odcs payments-data-product\n  \
        meshguard contract export --format odcs loans-data-product loan-schema > loan-schema.odcs.yaml")]
    Export(ExportArgs),
    /// Turn an ODCS document into a data product declaration and schema that `lint` accepts.
    ///
    /// Writes DIR/products/<product>.yaml and the schema files into DIR/../schemas (the layout
    /// `lint --config DIR` reads). A document meshguard exported comes back unchanged; one from
    /// elsewhere gets a JSON Schema built from its properties. Every field that cannot be
    /// mapped is reported at once, with its path in the document (exit 2).
    #[command(after_help = "Examples:\n  \
        meshguard contract export --format odcs loans-data-product > loans.odcs.yaml\n  \
        meshguard contract import odcs loans.odcs.yaml --config /tmp/imported/config && meshguard lint --config /tmp/imported/config\n  \
        meshguard contract import odcs orders.odcs.yaml --domain orders --owner orders-team@example.com --config /tmp/x/config")]
    Import(ImportArgs),
}

/// Document formats for export and import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocFormat {
    /// Open Data Contract Standard v3.1.
    Odcs,
}

/// Arguments of `contract export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Document format (only odcs).
    #[arg(long, value_enum)]
    pub format: DocFormat,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Data product (metadata.name).
    #[arg(value_name = "PRODUCT")]
    pub product: String,
    /// Contract of the product (default: its first).
    #[arg(value_name = "CONTRACT")]
    pub contract: Option<String>,
}

/// Arguments of `contract import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Document format.
    #[arg(value_enum, value_name = "FORMAT")]
    pub format: DocFormat,
    /// The ODCS document (YAML or JSON).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Configuration directory to write into: DIR/products and DIR/../schemas.
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config: PathBuf,
    /// metadata.domain when the document has no `domain`.
    #[arg(long)]
    pub domain: Option<String>,
    /// metadata.owner when the document's team has no member.
    #[arg(long)]
    pub owner: Option<String>,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
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
        ContractCommand::Export(e) => run_export(e),
        ContractCommand::Import(i) => run_import(i),
    }
}

fn run_export(args: ExportArgs) -> ExitCode {
    let DocFormat::Odcs = args.format;
    let (settings, catalog) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let files = crate::product::Files::from_settings(&settings, args.config.config.is_some());
    let doc = match odcs::export(&catalog, &files, &args.product, args.contract.as_deref(), &settings.kafka.bootstrap_servers) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    match serde_yaml::to_string(&doc) {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot write the document: {e}")),
    }
}

fn run_import(args: ImportArgs) -> ExitCode {
    let DocFormat::Odcs = args.format;
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    let doc: serde_json::Value = match serde_yaml::from_str(&text) {
        Ok(d) => d,
        Err(e) => return fail(format!("{}: not YAML or JSON: {e}", args.file.display())),
    };
    let defaults = ImportDefaults { domain: args.domain.clone(), owner: args.owner.clone() };
    let imported = match odcs::import(&doc, &defaults) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("meshguard: {} cannot be imported:", args.file.display());
            for p in &e.0 {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    let products = args.config.join("products");
    let schemas = args
        .config
        .parent()
        .map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() })
        .unwrap_or_else(|| PathBuf::from("."))
        .join("schemas");
    let mut writes = vec![(products.join(format!("{}.yaml", imported.product_name)), imported.product_yaml.clone())];
    writes.extend(imported.schemas.iter().map(|(f, t)| (schemas.join(f), t.clone())));
    if !args.force
        && let Some((path, _)) = writes.iter().find(|(p, _)| p.exists())
    {
        return fail(format!("{} exists; give --force to overwrite", path.display()));
    }
    for (path, text) in &writes {
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return fail(format!("{}: {e}", dir.display()));
        }
        if let Err(e) = std::fs::write(path, text) {
            return fail(format!("{}: {e}", path.display()));
        }
        println!("wrote {}", path.display());
    }
    for note in &imported.notes {
        println!("note: {note}");
    }
    ExitCode::SUCCESS
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
