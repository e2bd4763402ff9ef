//! Shared helpers for integration tests against the real servers started by
//! `testcontainers/up`. Nothing here fakes a server: a missing server fails the test loudly.

// Each test binary uses a different part of these helpers.
#![allow(dead_code, unused_imports, unreachable_pub, missing_debug_implementations)]

mod kafka_io;
mod mongo_io;
mod mysql_io;
mod products;
mod scenario;
mod servers;
mod service;

pub use self::kafka_io::*;
pub use self::mongo_io::*;
pub use self::mysql_io::*;
pub use self::products::*;
pub use self::scenario::*;
pub use self::servers::*;
pub use self::service::*;
