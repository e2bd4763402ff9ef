//! `meshguard lint`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;

use super::contract::ModeArg;
use super::fail;
use crate::config::Settings;
use crate::contract::diff::{self, LoadedSchema, Mode};
use crate::product::model::DataProduct;
use crate::product::{Catalog, Files, Problem};

/// Arguments of `lint`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    meshguard lint\n  \
    meshguard lint --against main                 # and fail on a breaking schema change since main\n  \
    meshguard lint --against HEAD~1 --mode full\n  \
    MESHGUARD__MYSQL__URL=mysql://reader@db:3306/banking meshguard lint   # sources checked against these settings")]
pub struct LintArgs {
    /// Configuration directory: data products are read from DIR/products, schemas from the
    /// `schemas` directory beside DIR (DIR/../schemas).
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config: PathBuf,
    /// Also compare every contract's schema with its version at this git revision (a branch,
    /// tag or commit), as `contract diff` does, and fail (exit 1) on a breaking change. A
    /// contract is matched by product and contract name, so a contract pointed at a new schema
    /// file is compared with the file it used before.
    #[arg(long, value_name = "GIT_REF")]
    pub against: Option<String>,
    /// Compatibility that `--against` requires.
    #[arg(long, value_enum, default_value = "backward", requires = "against")]
    pub mode: ModeArg,
    /// Settings (TOML) the products are checked against (today: `spec.sources.mysql.database`
    /// against the database of `mysql.url`, a warning when they differ). Default: DIR/meshguard.toml
    /// when it exists, else the embedded defaults; MESHGUARD__SECTION__KEY variables override both.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

/// Loads DIR/products with the schemas of DIR/../schemas as `lint` does, printing every problem
/// (`Err`: exit 1 after `what` says nothing was done, or 2 when DIR has no products directory).
pub(super) fn load_dir(config: &Path, command: &str) -> Result<(Files, Catalog), ExitCode> {
    let products = config.join("products");
    if !products.is_dir() {
        return Err(fail(format!("{}: no such directory (expected data products in DIR/products)", products.display())));
    }
    let schemas = config
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
            eprintln!("meshguard {command}: {} problem{} found", errors.0.len(), if errors.0.len() == 1 { "" } else { "s" });
            Err(ExitCode::from(1))
        }
        Ok(catalog) => Ok((files, catalog)),
    }
}

/// The settings of DIR: `--settings FILE`, else DIR/meshguard.toml when it exists, else the
/// embedded defaults; `MESHGUARD__SECTION__KEY` variables override them.
pub(super) fn dir_settings(config: &Path, settings: Option<&Path>) -> Result<Settings, ExitCode> {
    let file = settings.map(Path::to_path_buf).or_else(|| Some(config.join("meshguard.toml")).filter(|f| f.is_file()));
    Settings::load(file.as_deref()).map_err(fail)
}

pub(super) fn run(args: LintArgs) -> ExitCode {
    let (files, catalog) = match load_dir(&args.config, "lint") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let settings = match dir_settings(&args.config, args.settings.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let texts: Vec<(PathBuf, String)> =
        catalog.products.iter().map(|p| (p.file.clone(), std::fs::read_to_string(&p.file).unwrap_or_default())).collect();
    let warnings = source_warnings(&catalog, &texts, &settings.mysql.url);
    for w in &warnings {
        eprintln!("{w}");
    }
    let contracts: usize = catalog.products.iter().map(|p| p.contracts.len()).sum();
    println!("ok: {} data products, {} contracts, {} topics bound", catalog.products.len(), contracts, catalog.topics().len());
    for b in catalog.bindings() {
        println!("  {:<24} -> {} / {} {}", b.topic, b.contract.product, b.contract.name, b.contract.version);
    }
    let Some(reference) = &args.against else { return ExitCode::SUCCESS };
    match against(&catalog, &files, reference, args.mode.into()) {
        Err(message) => fail(message),
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("meshguard lint: {n} contract{} with breaking changes since {reference}", if n == 1 { "" } else { "s" });
            ExitCode::from(1)
        }
    }
}

/// The database a MySQL URL names (`mysql://user:password@host:port/DATABASE?options`), if any.
fn url_database(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    // The authority ends at the first `/` after the last `@` (a password may hold a `/`).
    let host = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    let (_, path) = host.split_once('/')?;
    let db = path.split(['?', '#']).next().unwrap_or_default();
    (!db.is_empty()).then_some(db)
}

/// The line of `spec.sources.mysql.database` in a product file's text, 1-based.
fn sources_database_line(text: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let sources = lines.iter().position(|l| l.trim_start().starts_with("sources:"))?;
    let mysql = sources + lines[sources..].iter().position(|l| l.trim_start().starts_with("mysql:"))?;
    let database = mysql + lines[mysql..].iter().position(|l| l.trim_start().starts_with("database:"))?;
    Some(database + 1)
}

/// A warning (never an error: the settings may be another environment's) for each product whose
/// `spec.sources.mysql.database` differs from the database `mysql_url` connects to: the
/// reconciliation looks its tables up in the connection's database, not the declared one.
/// `texts` holds each product file's text, for the line.
fn source_warnings(catalog: &Catalog, texts: &[(PathBuf, String)], mysql_url: &str) -> Vec<Problem> {
    let Some(connected) = url_database(mysql_url) else { return Vec::new() };
    catalog
        .products
        .iter()
        .filter_map(|p| {
            let declared = &p.decl.spec.sources.mysql.as_ref()?.database;
            if declared == connected {
                return None;
            }
            let line = texts.iter().find(|(f, _)| *f == p.file).and_then(|(_, t)| sources_database_line(t));
            Some(Problem {
                file: p.file.clone(),
                line,
                message: format!(
                    "warning: spec.sources.mysql.database is {declared:?} but mysql.url (settings) connects to database {connected:?}; \
                     accuracy is reconciled against {connected:?}"
                ),
            })
        })
        .collect()
}

/// Runs `git` in `dir`; its stdout, or why not.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// A path relative to the repository root, with `/` separators, as `git show REF:path` wants.
fn repo_relative(root: &Path, path: &Path) -> Option<String> {
    let abs = path.canonicalize().ok().or_else(|| {
        // A file that no longer exists on disk: canonicalize its directory.
        let parent = path.parent()?.canonicalize().ok()?;
        Some(parent.join(path.file_name()?))
    })?;
    let rel = abs.strip_prefix(root).ok()?;
    Some(rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/"))
}

/// Compares every contract schema with its version at `reference`; returns how many contracts
/// break under `mode`. Errors are usage errors (not a repository, unknown revision).
fn against(catalog: &Catalog, files: &Files, reference: &str, mode: Mode) -> Result<usize, String> {
    let Files::Disk { products, .. } = files else { return Err("--against needs products on disk".into()) };
    let root_text = git(products, &["rev-parse", "--show-toplevel"])
        .map_err(|e| format!("--against: {} is not in a git repository: {e}", products.display()))?;
    let root = PathBuf::from(String::from_utf8_lossy(&root_text).trim()).canonicalize().map_err(|e| format!("--against: {e}"))?;
    let _ = git(&root, &["rev-parse", "--verify", "--quiet", &format!("{reference}^{{commit}}")])
        .map_err(|_| format!("--against: {reference:?} is not a git revision"))?;
    println!("schema changes since {reference} (mode {}):", mode.as_str());
    let mut breaking = 0;
    let mut compared = 0;
    for product in &catalog.products {
        let Some(rel) = repo_relative(&root, &product.file) else { continue };
        let Ok(old_text) = git(&root, &["show", &format!("{reference}:{rel}")]) else {
            println!("  {}: new data product, nothing to compare", product.name());
            continue;
        };
        let old_decl: DataProduct = match serde_yaml::from_slice(&old_text) {
            Ok(d) => d,
            Err(e) => {
                println!("  {}: {rel} at {reference} does not parse ({e}); not compared", product.name());
                continue;
            }
        };
        for spec in &product.decl.spec.contracts {
            let label = format!("{} / {}", product.name(), spec.name);
            let Some(old_spec) = old_decl.spec.contracts.iter().find(|c| c.name == spec.name) else {
                println!("  {label}: new contract, nothing to compare");
                continue;
            };
            let new_path = files.resolve(&product.file, &spec.schema);
            let old_path = files.resolve(&product.file, &old_spec.schema);
            let Some(old_rel) = repo_relative(&root, &old_path) else { continue };
            let Ok(old_schema) = git(&root, &["show", &format!("{reference}:{old_rel}")]) else {
                println!("  {label}: {old_rel} does not exist at {reference}; not compared");
                continue;
            };
            let new_schema = std::fs::read(&new_path).map_err(|e| format!("{}: {e}", new_path.display()))?;
            if old_schema == new_schema {
                continue;
            }
            compared += 1;
            let old_name = format!("{reference}:{old_rel}");
            let new_name = new_path.display().to_string();
            let parse =
                |name: &str, bytes: &[u8]| LoadedSchema::parse(name, &String::from_utf8_lossy(bytes)).map_err(|e| format!("{label}: {e}"));
            let report = diff::diff(&old_name, &parse(&old_name, &old_schema)?, &new_name, &parse(&new_name, &new_schema)?, mode)
                .map_err(|e| format!("{label}: {e}"))?;
            println!("  {label}:");
            for line in diff::render_text(&report).lines() {
                println!("  {line}");
            }
            if !report.compatible {
                breaking += 1;
            }
        }
    }
    if compared == 0 {
        println!("  no contract schema changed");
    }
    Ok(breaking)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_mysql_url() {
        assert_eq!(url_database("mysql://root@127.0.0.1:3306/banking"), Some("banking"));
        assert_eq!(url_database("mysql://u:p/w@db:3306/ledger?ssl-mode=required"), Some("ledger"));
        assert_eq!(url_database("mysql://root@127.0.0.1:3306"), None);
        assert_eq!(url_database("mysql://root@127.0.0.1:3306/"), None);
    }

    #[test]
    fn a_source_database_other_than_the_settings_is_a_warning_with_its_line() -> Result<(), String> {
        let catalog = Catalog::load(&Files::Embedded).map_err(|e| e.to_string())?;
        let texts: Vec<(PathBuf, String)> =
            catalog.products.iter().map(|p| (p.file.clone(), "spec:\n  sources:\n    mysql:\n      database: banking\n".into())).collect();
        assert!(source_warnings(&catalog, &texts, "mysql://root@127.0.0.1:3306/banking").is_empty());
        assert!(source_warnings(&catalog, &texts, "mysql://root@127.0.0.1:3306").is_empty());
        let warnings = source_warnings(&catalog, &texts, "mysql://root@127.0.0.1:3306/ledger");
        assert_eq!(warnings.len(), catalog.products.len());
        let shown = warnings[0].to_string();
        assert!(shown.contains(":4: warning: spec.sources.mysql.database is \"banking\""), "{shown}");
        assert!(shown.contains("\"ledger\""), "{shown}");
        Ok(())
    }
}
