//! `machine-server`: resources served by custom storage instead of the key-value store.
//!
//! - `processes.machine.example.com`: this machine's processes, computed from `/proc` on every
//!   read, like metrics-server's metrics: cluster-scoped and read-only (get, list, watch).
//! - `notes.machine.example.com`: notes kept as JSON files under `--notes-dir`, an external
//!   store that other programs may edit too; every verb but the status and scale subresources.

// clippy reads repeated `printcolumn(type = ...)` entries of `#[api]` as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

mod notes;
mod process;

use apiary::server::{Server, ServerOptions};
use clap::Parser;

/// The machine API server.
#[derive(Parser)]
#[command(name = "machine-server", version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerOptions,
    /// Where notes are kept, one `<namespace>/<name>.json` file each.
    #[arg(long, default_value = ".apiary/notes")]
    notes_dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> Result<(), apiary::Error> {
    let cli = Cli::parse();
    cli.server.init_logging();
    let notes = notes::NoteFiles::open(&cli.notes_dir)?;
    Server::new(cli.server)
        .await?
        .custom::<process::Process, _>(process::Proc)?
        .custom::<notes::Note, _>(notes)?
        .run()
        .await
}
