//! `meshguard lint`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::fail;
use crate::product::{Catalog, Files};

/// Arguments of `lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Configuration directory: data products are read from DIR/products, schemas from the
    /// `schemas` directory beside DIR (DIR/../schemas).
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config: PathBuf,
}

pub(super) fn run(args: LintArgs) -> ExitCode {
    let products = args.config.join("products");
    if !products.is_dir() {
        return fail(format!("{}: no such directory (expected data products in DIR/products)", products.display()));
    }
    let schemas = args
        .config
        .parent()
        .map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() })
        .unwrap_or_else(|| PathBuf::from("."))
        .join("schemas");
    let files = Files::Disk { products, schemas };
    match Catalog::load(&files) {
        Err(errors) => {
            for p in &errors.0 {
                eprintln!("{p}");
            }
            eprintln!("meshguard lint: {} problem{} found", errors.0.len(), if errors.0.len() == 1 { "" } else { "s" });
            ExitCode::from(1)
        }
        Ok(catalog) => {
            let contracts: usize = catalog.products.iter().map(|p| p.contracts.len()).sum();
            println!("ok: {} data products, {} contracts, {} topics bound", catalog.products.len(), contracts, catalog.topics().len());
            for b in catalog.bindings() {
                println!("  {:<24} -> {} / {} {}", b.topic, b.contract.product, b.contract.name, b.contract.version);
            }
            ExitCode::SUCCESS
        }
    }
}
