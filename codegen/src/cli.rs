//! The standard `generate` command, so a project's xtask is a few lines:
//!
//! ```ignore
//! fn main() {
//!     let project = apiary_codegen::Project::new("gadget-server", "gadget-system", "gadget-server:0.1.0")
//!         .resource::<gadget_api::Gadget>();
//!     let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
//!     apiary_codegen::cli::main(&project, &root, &root.join("deploy"), &root.join("client"));
//! }
//! ```
//!
//! `cargo xtask generate [manifests|certs|openapi|client]... [--out DIR] [--check]
//! [--rotate | --rotate-ca]`, one output line per file (`written`, `unchanged`, `stale` with a
//! diff); exit 1 when `--check` finds stale output or generation fails.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::{Mode, Outcome, Parts, Project};

/// Project tasks.
#[derive(Parser)]
#[command(name = "xtask")]
enum Task {
    /// Render manifests, certificates, OpenAPI files and the client crate.
    Generate(Generate),
}

#[derive(clap::Args)]
struct Generate {
    /// Only these outputs (default: all).
    #[arg(value_enum)]
    only: Vec<Part>,
    /// Write under DIR/deploy and DIR/client instead of the project's directories.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write nothing; exit 1 and show what differs when the committed output is stale.
    #[arg(long)]
    check: bool,
    /// Issue a new serving certificate first (the CA is kept).
    #[arg(long, conflicts_with = "check")]
    rotate: bool,
    /// Issue a new CA and serving certificate first (every caBundle changes).
    #[arg(long, conflicts_with = "check")]
    rotate_ca: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Manifests,
    Certs,
    Openapi,
    Client,
}

/// Parse the command line and run it for `project`, writing the manifests to `deploy` and
/// the client crate to `client` (paths are shown relative to `root`); exits on failure.
pub fn main(project: &Project, root: &Path, deploy: &Path, client: &Path) {
    if let Err(e) = run(project, root, deploy, client) {
        eprintln!("xtask generate: {e}");
        std::process::exit(1);
    }
}

fn run(project: &Project, root: &Path, deploy: &Path, client: &Path) -> Result<(), String> {
    let Task::Generate(args) = Task::parse();
    let (deploy, client) = match &args.out {
        Some(out) => (out.join("deploy"), out.join("client")),
        None => (deploy.to_path_buf(), client.to_path_buf()),
    };
    let parts = if args.only.is_empty() {
        Parts::all()
    } else {
        Parts {
            manifests: args.only.contains(&Part::Manifests),
            certs: args.only.contains(&Part::Certs),
            openapi: args.only.contains(&Part::Openapi),
            client: args.only.contains(&Part::Client),
        }
    };
    if args.rotate || args.rotate_ca {
        crate::rotate_certs(project, &deploy, args.rotate_ca)?;
    }
    let mode = if args.check { Mode::Check } else { Mode::Write };
    let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let current = crate::generate(
        project,
        &deploy,
        &client,
        parts,
        mode,
        &mut |path, outcome| match outcome {
            Outcome::Written => println!("written   {}", shown(path)),
            Outcome::Unchanged => println!("unchanged {}", shown(path)),
            Outcome::Stale(diff) => println!("stale     {}\n{diff}", shown(path)),
        },
    )?;
    if current {
        Ok(())
    } else {
        Err("generated files are stale: run `cargo xtask generate` and commit the result".into())
    }
}
