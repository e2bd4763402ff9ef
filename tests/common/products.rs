//! Product directories that bind the shipped products to a test's own topics, and the side-topic
//! names of one test.

use std::path::Path;

use super::{repo, unique};

/// A product directory binding `topics` to the seed's payment contract.
pub struct Products {
    pub dir: tempfile::TempDir,
}

impl Products {
    pub fn payments(topics: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        bind_product(dir.path(), "payments.yaml", topics);
        Self { dir }
    }
}

/// Writes `config/products/<file>` into `dir` with every contract's Kafka `topics:` list
/// replaced by `topics`.
pub fn bind_product(dir: &Path, file: &str, topics: &[&str]) {
    let seed = std::fs::read_to_string(repo().join("config/products").join(file)).unwrap_or_else(|e| panic!("{e}"));
    let mut yaml = String::new();
    let mut skipping = false;
    for line in seed.lines() {
        if line.starts_with("      topics:") {
            yaml.push_str(line);
            yaml.push('\n');
            for t in topics {
                yaml.push_str(&format!("        - {t}\n"));
            }
            skipping = true;
            continue;
        }
        if skipping && line.trim_start().starts_with("- ") {
            continue;
        }
        skipping = false;
        yaml.push_str(line);
        yaml.push('\n');
    }
    std::fs::write(dir.join(file), yaml).unwrap_or_else(|e| panic!("{e}"));
}

/// Side-topic names and group of one test.
pub struct Names {
    pub group: String,
    pub dlq: String,
    pub alerts: String,
    pub lineage: String,
    /// MongoDB database of this test.
    pub database: String,
}

impl Names {
    pub fn new() -> Self {
        Self {
            group: unique("g"),
            dlq: unique("dlq"),
            alerts: unique("alerts"),
            lineage: unique("lineage"),
            database: unique("db").replace('-', "_"),
        }
    }
}
