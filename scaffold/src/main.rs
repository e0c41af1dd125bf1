//! `apiary-new PATH --group G [--version V] --kind K [--cluster] [--apiary PATH|URL]`: write a
//! new project. In this repository `cargo apiary-new …` runs it (an alias); elsewhere
//! `cargo install --git <this repository> apiary-scaffold` installs it.

use clap::Parser;

/// Write a new project (a workspace: API types, server, xtask) into a new directory.
#[derive(Parser)]
#[command(name = "apiary-new")]
struct Cli {
    #[command(flatten)]
    args: apiary_scaffold::NewArgs,
}

fn main() -> std::process::ExitCode {
    match apiary_scaffold::new(Cli::parse().args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
