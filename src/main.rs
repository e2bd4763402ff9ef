//! The `meshguard` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    meshguard::cli::main(meshguard::cli::Cli::parse())
}
