//! The standard `generate` command, so a project's xtask is a few lines:
//!
//! ```no_run
//! // xtask/src/main.rs's `main`:
//! let project = apiary_codegen::Project::new("widget-server", "widget-system", "widget-server:0.1.0")
//!     .resource::<widget_api::Widget>();
//! let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
//! apiary_codegen::cli::main(&project, &root, &root.join("deploy"), &root.join("client"));
//! ```
//!
//! `cargo xtask generate [manifests|certs|openapi|client|go-client]... [--out DIR] [--check]
//! [--rotate | --rotate-ca]`, one output line per file (`written`, `unchanged`, `stale` with a
//! diff); exit 1 when `--check` finds stale output or generation fails.
//!
//! `cargo xtask new PATH --group G [--version V] --kind K [--cluster] [--apiary PATH|URL]`
//! writes a new project (`apiary_scaffold`, which is also the faster `apiary-new` binary);
//! `cargo xtask image [--out DIR] [--debug]` builds the server's OCI image and pins the
//! workload to its digest ([`crate::image`]).

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::{Mode, Outcome, Parts, Project};

/// Project tasks.
#[derive(Parser)]
#[command(name = "xtask")]
enum Task {
    /// Render manifests, certificates, OpenAPI files, the client crate and the Go client module.
    Generate(Generate),
    /// Write a new project (a workspace: API types, server, xtask) into a new directory.
    New(apiary_scaffold::NewArgs),
    /// Build the server in release mode into an OCI image (no daemon) and pin the workload to it.
    Image(Image),
    /// Run the server behind a real kube-apiserver on this machine (`up`), or stop it (`down`).
    #[command(subcommand)]
    Cluster(ClusterTask),
}

#[derive(clap::Subcommand)]
enum ClusterTask {
    /// Start etcd, kube-apiserver and kube-controller-manager (built from source with Go and
    /// cached), then the server, registered with its generated APIServices; wait until they are
    /// Available and print `export KUBECONFIG=…` last. The processes keep running.
    Up {
        /// Where the server stores its objects.
        #[arg(long, value_enum, default_value_t = crate::cluster::Storage::Embedded)]
        storage: crate::cluster::Storage,
    },
    /// Stop what `up` started.
    Down,
    /// Build the real components (or find them in the cache) and print their paths.
    Build,
}

#[derive(clap::Args)]
struct Image {
    /// Write the image layout to DIR/image and the manifests under DIR/deploy (default:
    /// target/oci/NAME and the project's deploy directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A debug build (faster to build; for tests).
    #[arg(long)]
    debug: bool,
}

#[derive(clap::Args)]
struct Generate {
    /// Only these outputs (default: all).
    #[arg(value_enum)]
    only: Vec<Part>,
    /// Write under DIR/deploy, DIR/client (and DIR/client-go) instead of the project's directories.
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
    GoClient,
}

/// Parse the command line and run it for `project`, writing the manifests to `deploy` and
/// the client crate to `client` (paths are shown relative to `root`); exits on failure.
pub fn main(project: &Project, root: &Path, deploy: &Path, client: &Path) {
    if let Err(e) = run(project, root, deploy, client) {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}

fn run(project: &Project, root: &Path, deploy: &Path, client: &Path) -> Result<(), String> {
    let args = match Task::parse() {
        Task::Generate(args) => args,
        Task::New(args) => return apiary_scaffold::new(args),
        Task::Image(args) => return image(project, root, deploy, args),
        Task::Cluster(ClusterTask::Up { storage }) => {
            let kubeconfig = crate::cluster::up(project, root, deploy, storage)?;
            println!("export KUBECONFIG={}", kubeconfig.display());
            return Ok(());
        }
        Task::Cluster(ClusterTask::Build) => {
            let binaries = apiary_cluster::Binaries::ensure().map_err(|e| e.to_string())?;
            for path in [
                &binaries.kube_apiserver,
                &binaries.kube_controller_manager,
                &binaries.kubectl,
                &binaries.etcd,
            ] {
                println!("{}", path.display());
            }
            return Ok(());
        }
        Task::Cluster(ClusterTask::Down) => {
            for name in crate::cluster::down(root)? {
                println!("stopped   {name}");
            }
            return Ok(());
        }
    };
    let (deploy, client) = match &args.out {
        Some(out) => (out.join("deploy"), out.join("client")),
        None => (deploy.to_path_buf(), client.to_path_buf()),
    };
    let moved;
    let project = match (&args.out, &project.go_client) {
        (Some(out), Some(go)) => {
            moved = project.clone().go_client(&go.module, out.join("client-go"));
            &moved
        }
        _ => project,
    };
    let parts = if args.only.is_empty() {
        Parts::all()
    } else {
        Parts {
            manifests: args.only.contains(&Part::Manifests),
            certs: args.only.contains(&Part::Certs),
            openapi: args.only.contains(&Part::Openapi),
            client: args.only.contains(&Part::Client),
            go_client: args.only.contains(&Part::GoClient),
        }
    };
    if args.rotate || args.rotate_ca {
        crate::rotate_certs(project, &deploy, args.rotate_ca)?;
    }
    let mode = if args.check { Mode::Check } else { Mode::Write };
    if generate(project, root, &deploy, &client, parts, mode)? {
        Ok(())
    } else {
        Err("generated files are stale: run `cargo xtask generate` and commit the result".into())
    }
}

/// [`crate::generate`], one output line per file; whether everything was current.
fn generate(
    project: &Project,
    root: &Path,
    deploy: &Path,
    client: &Path,
    parts: Parts,
    mode: Mode,
) -> Result<bool, String> {
    let shown = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    crate::generate(
        project,
        deploy,
        client,
        parts,
        mode,
        &mut |path, outcome| match outcome {
            Outcome::Written => println!("written   {}", shown(path)),
            Outcome::Unchanged => println!("unchanged {}", shown(path)),
            Outcome::Stale(diff) => println!("stale     {}\n{diff}", shown(path)),
        },
    )
}

fn image(project: &Project, root: &Path, deploy: &Path, args: Image) -> Result<(), String> {
    let (layout, deploy) = match &args.out {
        Some(out) => (out.join("image"), out.join("deploy")),
        None => (root.join("target/oci").join(&project.name), deploy.to_path_buf()),
    };
    let binary = crate::image::build(root, &project.name, &project.features, !args.debug)?;
    let digest = crate::image::write_layout(&binary, &project.name, &project.image, &layout)?;
    std::fs::create_dir_all(&deploy).map_err(|e| format!("{}: {e}", deploy.display()))?;
    let pin = deploy.join(crate::image::DIGEST_FILE);
    std::fs::write(&pin, format!("{digest}\n")).map_err(|e| format!("{}: {e}", pin.display()))?;
    let tag = crate::image::tag_of(&project.image);
    let shown = layout.strip_prefix(root).unwrap_or(&layout).display().to_string();
    println!("image     oci:{shown}:{tag} {digest}");
    let manifests = Parts {
        manifests: true,
        certs: false,
        openapi: false,
        client: false,
        go_client: false,
    };
    generate(project, root, &deploy, Path::new(""), manifests, Mode::Write)?;
    println!("\nPush it: skopeo copy oci:{shown}:{tag} docker://{}", project.image);
    Ok(())
}
