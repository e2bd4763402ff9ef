//! The `meshguard` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, as Vector ships: with glibc malloc the stream's threads each grew an arena of their
/// own and the peak RSS with every sink on passed the 200 MB bound (docs/benchmarks.md, round 5f).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    meshguard::cli::main(meshguard::cli::Cli::parse())
}
