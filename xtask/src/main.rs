//! `cargo xtask`: project automation (generation lands with issue 6).
use clap::Parser;

/// Apiary project tasks.
#[derive(Parser)]
#[command(name = "xtask")]
enum Task {
    /// Render manifests, certificates, OpenAPI files and clients (not implemented yet).
    Generate,
}

fn main() {
    match Task::parse() {
        Task::Generate => {
            eprintln!("xtask generate is not implemented yet (issue 6)");
            std::process::exit(2);
        }
    }
}
