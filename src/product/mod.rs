//! Data products: the typed declaration ([`model`]), SLA values ([`sla`]) and the catalog that
//! loads every product, compiles its contracts and binds topics to them ([`catalog`]).

pub mod catalog;
mod embedded;
pub mod model;
pub mod odcs;
pub mod sla;
pub mod stored;

pub use self::catalog::{Binding, Catalog, Files, LoadErrors, Problem, Product};
pub use self::model::DataProduct;
