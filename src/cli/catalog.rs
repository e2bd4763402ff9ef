//! `meshguard catalog apply|diff|list|show`: the data products in MongoDB `data_products`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::fail;
use super::lint::{dir_settings, load_dir};
use crate::config::Settings;
use crate::product::stored::{self, Change, ChangeKind, StoredProduct};
use crate::sink::catalog::{Claim, Stored};
use crate::sink::mongo::MongoSink;

/// Arguments of `catalog`.
#[derive(Debug, Args)]
#[command(after_help = "How it works:\n  \
    `apply` lints every product and contract of DIR exactly as `meshguard lint --config DIR` does, and\n  \
    writes nothing unless all of them pass. It then stores one document per product in MongoDB\n  \
    `data_products` (_id = metadata.name): the declaration, the text of every file it names\n  \
    (schemas, Avro writer schemas, the GraphQL schema), a content hash and a revision. A product\n  \
    whose content changed gets revision + 1; an unchanged one keeps its revision (applying twice\n  \
    changes nothing); a product no longer on disk is marked retired: true (and revision + 1),\n  \
    never deleted. Each write first claims its revision (data_product_revisions) and replaces\n  \
    only the revision this apply read: when another apply got there first, it reads and plans\n  \
    again (up to 10 times), so two applies never write the same revision.\n\n  \
    With products.source = \"mongodb\" (MESHGUARD__PRODUCTS__SOURCE=mongodb), `serve` and `run`\n  \
    read this catalog instead of files and switch to a new revision without a restart (every\n  \
    products.reload_interval_ms): `serve` from the next request, `run` from the next batch. A\n  \
    revision that does not compile is refused and the one in force stays\n  \
    (meshguard_catalog_refusals_total, and an error in the log).\n\n\
Examples:\n  \
    meshguard catalog diff                              # what apply would change (exit 1 if anything)\n  \
    meshguard catalog apply                             # lint config/, then store the new revisions\n  \
    meshguard catalog apply --config deploy/config      # another directory (DIR/products, DIR/../schemas)\n  \
    meshguard catalog list\n  \
    meshguard catalog show payments-data-product        # the stored document as JSON\n  \
    MESHGUARD__MONGODB__URI=mongodb://db:27017 meshguard catalog list")]
pub struct CatalogArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CatalogCommand,
}

/// `catalog` subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Lint DIR, then write every new or changed product's revision to MongoDB (exit 0 applied,
    /// 1 lint problems: nothing written, 2 usage or MongoDB error).
    Apply(DirArgs),
    /// What `apply` would change, product by product (exit 0 nothing, 1 something, 2 error).
    Diff(DirArgs),
    /// Every product stored: revision, state, hash, contracts.
    List(StoreArgs),
    /// One stored product as JSON: declaration, revision, hash, retired, schema texts.
    Show(ShowArgs),
}

/// Where the products are read from and written to.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Configuration directory: data products in DIR/products, schemas in DIR/../schemas (as
    /// `lint`); MongoDB settings from DIR/meshguard.toml when it exists.
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config: PathBuf,
    /// Settings (TOML) naming MongoDB (`mongodb.uri`, `mongodb.database`) instead of
    /// DIR/meshguard.toml; MESHGUARD__SECTION__KEY variables override both.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

/// Where the catalog is read from.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Configuration directory whose meshguard.toml names MongoDB, when it has one.
    #[arg(long, value_name = "DIR", default_value = "config")]
    pub config: PathBuf,
    /// Settings (TOML) naming MongoDB instead of DIR/meshguard.toml.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

/// `catalog show NAME`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The product (`metadata.name`).
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub(super) fn run(args: CatalogArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match args.command {
        CatalogCommand::Apply(a) => runtime.block_on(apply(a, true)),
        CatalogCommand::Diff(a) => runtime.block_on(apply(a, false)),
        CatalogCommand::List(a) => runtime.block_on(list(a)),
        CatalogCommand::Show(a) => runtime.block_on(show(a)),
    }
}

async fn connect(settings: &Settings) -> Result<MongoSink, ExitCode> {
    MongoSink::connect(&settings.mongodb.uri, &settings.mongodb.database, &[])
        .await
        .map_err(|e| fail(format!("cannot connect to MongoDB ({}): {e}", crate::sink::mongo::redact_uri(&settings.mongodb.uri))))
}

async fn stored(store: &MongoSink) -> Result<Stored, ExitCode> {
    store.catalog().await.map_err(|e| fail(format!("cannot read data_products: {e}")))
}

/// `apply` (write) and `diff` (only tell).
async fn apply(args: DirArgs, write: bool) -> ExitCode {
    let command = if write { "catalog apply" } else { "catalog diff" };
    let (files, catalog) = match load_dir(&args.config, command) {
        Ok(loaded) => loaded,
        Err(code) => {
            if write {
                eprintln!("meshguard catalog apply: nothing written");
            }
            return code;
        }
    };
    let mut desired = Vec::new();
    for p in &catalog.products {
        match StoredProduct::of(p, &files) {
            Ok(s) => desired.push(s),
            Err(problem) => return fail(problem),
        }
    }
    // What is stored must compile as it will be read back (e.g. no `$ref` to a file the
    // document does not hold).
    if let Err(errors) = stored::compile(&desired) {
        for p in &errors.0 {
            eprintln!("{p}");
        }
        eprintln!("meshguard {command}: the products do not compile from their stored form; nothing written");
        return ExitCode::from(1);
    }
    let settings = match dir_settings(&args.config, args.settings.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let store = match connect(&settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Each write first claims its revision (an insert into data_product_revisions, refused
    // atomically when another apply holds it), then replaces the document only if it is still
    // the one this apply read. When another apply got there first, read again and plan again
    // (the product now differs from the newer revision, or is unchanged), so no two applies
    // write the same revision number.
    for attempt in 1..=APPLY_ATTEMPTS {
        let current = match stored(&store).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let changes = stored::plan(&current.applied, &desired);
        let summary = report_plan(&changes, &current, &desired);
        let pending = changes.iter().filter(|c| c.write.is_some()).count();
        if !write {
            println!("{}: {summary}", if pending == 0 { "nothing to apply" } else { "apply would write" });
            return if pending == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) };
        }
        let mut overtaken = None;
        for c in &changes {
            let Some(doc) = &c.write else { continue };
            match write_change(&store, c, doc.clone()).await {
                Ok(true) => {}
                Ok(false) => {
                    overtaken = Some(c);
                    break;
                }
                Err(e) => return fail(format!("cannot write {} to data_products: {e} (applying again is safe)", c.name)),
            }
        }
        let Some(c) = overtaken else {
            println!("applied to {}/data_products: {summary}", settings.mongodb.database);
            return ExitCode::SUCCESS;
        };
        let what = if c.from == 0 { "was not applied".to_owned() } else { format!("was at revision {}", c.from) };
        if attempt == APPLY_ATTEMPTS {
            return fail(format!(
                "{} {what} when this apply read it, and revision {} is claimed by another writer (data_product_revisions), \
                 {APPLY_ATTEMPTS} times in a row; the products before it in the list above are written, it and those after \
                 it are not: run `meshguard catalog diff`, then apply again",
                c.name, c.to
            ));
        }
        println!("  {} {what} when read, and another `catalog apply` claimed revision {} since: reading the catalog again", c.name, c.to);
        tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
    }
    ExitCode::SUCCESS
}

/// Times `catalog apply` reads and plans again after another apply claimed a revision first.
const APPLY_ATTEMPTS: u32 = 10;

/// A claim older than this whose revision `data_products` still does not hold belongs to an
/// apply that died between claiming and writing: its number is skipped, not waited for.
const STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(60);

/// Claims the change's revision and writes its document; `Ok(false)` when another writer
/// holds the revision or changed the document since it was read.
async fn write_change(store: &MongoSink, c: &Change, mut doc: StoredProduct) -> Result<bool, crate::sink::mongo::MongoSinkError> {
    loop {
        match store.claim_revision(&doc).await? {
            Claim::Claimed => break,
            Claim::Taken { claimed_at: Some(at) }
                if std::time::SystemTime::now().duration_since(at.to_system_time()).is_ok_and(|age| age > STALE_CLAIM) =>
            {
                println!(
                    "  ({} revision {} was claimed at {} by an apply that never wrote it: using revision {})",
                    doc.name,
                    doc.revision,
                    at.try_to_rfc3339_string().unwrap_or_default(),
                    doc.revision + 1
                );
                doc.revision += 1;
            }
            Claim::Taken { .. } => return Ok(false),
        }
    }
    match store.put_product_if(&doc, c.stored_hash.as_deref().map(|h| (c.from, h))).await {
        Ok(true) => Ok(true),
        other => {
            store.release_revision(&doc).await;
            other
        }
    }
}

/// Prints the plan; its one-line summary.
fn report_plan(changes: &[Change], current: &Stored, desired: &[StoredProduct]) -> String {
    for c in changes {
        println!("{}", describe_change(c));
    }
    for id in current.unapplied.iter().filter(|id| !desired.iter().any(|d| &d.name == *id)) {
        println!("  {id:<28} not applied (a declaration `run` stored from files); left as it is");
    }
    let count = |k: ChangeKind| changes.iter().filter(|c| c.kind == k).count();
    format!(
        "{} added, {} changed, {} restored, {} retired, {} unchanged",
        count(ChangeKind::Added),
        count(ChangeKind::Changed),
        count(ChangeKind::Restored),
        count(ChangeKind::Retired),
        count(ChangeKind::Unchanged)
    )
}

fn describe_change(c: &Change) -> String {
    let revision = match c.kind {
        ChangeKind::Unchanged => format!("revision {}", c.to),
        ChangeKind::Added => format!("revision {}", c.to),
        _ => format!("revision {} -> {}", c.from, c.to),
    };
    let details = if c.details.is_empty() { String::new() } else { format!("  ({})", c.details.join(", ")) };
    format!("  {:<28} {:<10} {revision}{details}", c.name, c.kind.to_string())
}

async fn list(args: StoreArgs) -> ExitCode {
    let settings = match dir_settings(&args.config, args.settings.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let store = match connect(&settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let current = match stored(&store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    if current.applied.is_empty() {
        println!("no catalog applied in {}/data_products (meshguard catalog apply)", settings.mongodb.database);
    }
    for p in &current.applied {
        let state = if p.retired { "retired" } else { "in force" };
        let contracts: Vec<String> = p.declaration["spec"]["contracts"]
            .as_array()
            .map(|a| a.iter().map(|c| format!("{} {}", c["name"].as_str().unwrap_or("?"), c["version"].as_str().unwrap_or("?"))).collect())
            .unwrap_or_default();
        let short_hash: String = p.hash.chars().take(19).collect();
        println!("{:<28} revision {:<4} {:<9} {short_hash}  {}", p.name, p.revision, state, contracts.join(", "));
    }
    for id in &current.unapplied {
        println!("{id:<28} not applied (declaration stored by `run` from files)");
    }
    ExitCode::SUCCESS
}

async fn show(args: ShowArgs) -> ExitCode {
    let settings = match dir_settings(&args.store.config, args.store.settings.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let store = match connect(&settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let current = match stored(&store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(p) = current.applied.iter().find(|p| p.name == args.name) else {
        let known: Vec<&str> = current.applied.iter().map(|p| p.name.as_str()).collect();
        return fail(format!("no product {:?} in the catalog (stored: {})", args.name, known.join(", ")));
    };
    let doc = json!({
        "name": p.name,
        "revision": p.revision,
        "retired": p.retired,
        "hash": p.hash,
        "declaration": p.declaration,
        "schemas": p.files,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    ExitCode::SUCCESS
}
