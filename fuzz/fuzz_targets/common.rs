// Shared by the targets: the shipped data products (config/products, schemas), loaded once.

use std::sync::{Arc, LazyLock};

use meshguard::contract::Contract;
use meshguard::product::{Catalog, Files};

pub static CONTRACTS: LazyLock<Vec<Arc<Contract>>> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = Files::Disk { products: root.join("config/products"), schemas: root.join("schemas") };
    let catalog = Catalog::load(&files).unwrap_or_else(|e| panic!("the shipped products do not load: {e}"));
    let contracts: Vec<Arc<Contract>> = catalog.products.iter().filter_map(|p| p.contract(None).cloned()).collect();
    assert!(!contracts.is_empty());
    contracts
});

/// A fixed "now", so a run is reproducible.
pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Evaluates `payload` against `contract` and checks the verdict is self-consistent.
/// (The decode targets use it; `validate` compares the two evaluation paths instead.)
#[allow(dead_code)]
pub fn check(contract: &Contract, payload: &[u8]) {
    let eval = meshguard::verdict::evaluate(contract, payload, now());
    match &eval.rejection {
        Some(r) => {
            assert!(!r.violations.is_empty(), "a rejection always carries a reason");
            assert!(!r.class.is_empty());
        }
        None => assert!(eval.record.is_some(), "a valid record is decoded"),
    }
    if let Some(id) = &eval.record_id {
        assert!(id.len() <= 256 + "sha256:".len(), "record ids are bounded");
    }
}
