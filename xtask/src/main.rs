//! `cargo xtask`: project automation for this repository's examples.
use std::path::{Path, PathBuf};

use apiary_codegen::{Mode, Outcome, Parts, Project};
use clap::Parser;

/// Apiary project tasks.
#[derive(Parser)]
#[command(name = "xtask")]
enum Task {
    /// Render manifests, certificates, OpenAPI files and the client crate of the Widget example.
    Generate(Generate),
}

#[derive(clap::Args)]
struct Generate {
    /// Only these outputs (default: all).
    #[arg(value_enum)]
    only: Vec<Part>,
    /// Write under DIR/deploy and DIR/client instead of examples/widget/.
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

/// The Widget example's server, as deployed by `examples/widget/deploy`.
fn widget_project() -> Project {
    Project::new(
        "widget-server",
        "widget-system",
        "registry.example.com/apiary/widget-server:0.1.0",
    )
    .resource::<widget_api::Widget>()
    .resource::<widget_api::WidgetPolicy>()
}

fn main() {
    let Task::Generate(args) = Task::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = args.out.clone().unwrap_or_else(|| root.join("examples/widget"));
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
    let mode = if args.check { Mode::Check } else { Mode::Write };
    if (args.rotate || args.rotate_ca)
        && let Err(e) = apiary_codegen::rotate_certs(&widget_project(), &out.join("deploy"), args.rotate_ca)
    {
        eprintln!("xtask generate: {e}");
        std::process::exit(1);
    }
    let shown = |p: &Path| p.strip_prefix(&root).unwrap_or(p).display().to_string();
    let result = apiary_codegen::generate(
        &widget_project(),
        &out.join("deploy"),
        &out.join("client"),
        parts,
        mode,
        &mut |path, outcome| match outcome {
            Outcome::Written => println!("written   {}", shown(path)),
            Outcome::Unchanged => println!("unchanged {}", shown(path)),
            Outcome::Stale(diff) => println!("stale     {}\n{diff}", shown(path)),
        },
    );
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("generated files are stale: run `cargo xtask generate` and commit the result");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("xtask generate: {e}");
            std::process::exit(1);
        }
    }
}
