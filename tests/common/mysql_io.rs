//! The source database's rows, as the generator would write them.

use super::{mysql, repo};

/// `mysql.url` (`MESHGUARD_TEST_MYSQL`) with another database.
pub fn url_of(database: &str) -> String {
    let base = mysql();
    match base.rsplit_once('/') {
        Some((head, _)) if head.contains("://") && head.len() > head.find("://").unwrap_or(0) + 3 => format!("{head}/{database}"),
        _ => panic!("MESHGUARD_TEST_MYSQL {base} names no database"),
    }
}

/// Writes the source rows of `count` payment events generated from `seed` (as `produce_payments`
/// made them, valid ones) to MariaDB.
pub async fn write_source_rows(count: usize, seed: u64) {
    let catalog = meshguard::product::Catalog::load(&meshguard::product::Files::Disk {
        products: repo().join("config/products"),
        schemas: repo().join("schemas"),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let contract = catalog.product("payments-data-product").and_then(|p| p.contract(None)).cloned().unwrap_or_else(|| panic!("contract"));
    let mut generator = meshguard::generate::Generator::for_contract(&contract, seed, 0.0, 0.0).unwrap_or_else(|| panic!("generator"));
    let rows: Vec<_> = (0..count).filter_map(|_| generator.next_event(time::OffsetDateTime::now_utc()).source).collect();
    let writer = meshguard::generate::mysql::SourceWriter::connect(&mysql(), &contract).await.unwrap_or_else(|e| panic!("{e}"));
    writer.write(&rows).await.unwrap_or_else(|e| panic!("{e}"));
}
