//! `widget-server`: the Widget aggregated API server (`custom.example.com/v1`, and the
//! deprecated `v1alpha1` Widget).
//!
//! Serves Widgets and WidgetPolicies with the runtime, refuses Widgets whose image a
//! WidgetPolicy denies (an admission step), and runs the example's status logic: every
//! Widget's status is filled in here (phase, availableReplicas, lastUpdated, a Ready
//! condition), never by clients.

mod policy;
mod status;

use apiary_runtime::server::{Server, ServerOptions};
use clap::Parser;
use widget_api::{Widget, WidgetPolicy};

// mimalloc: 25% more GETs and 45% more creates a second than glibc's malloc in the HTTP
// benchmark, where jemalloc gained nothing measurable (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Widget API server.
#[derive(Parser)]
#[command(name = "widget-server", version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerOptions,
    /// Run the example's status logic (off: the API alone, as the HTTP benchmark measures it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    status_controller: bool,
}

#[tokio::main]
async fn main() -> Result<(), apiary_runtime::Error> {
    let cli = Cli::parse();
    cli.server.init_logging();
    let server = Server::new(cli.server)
        .await?
        .resource::<Widget>()?
        .resource::<widget_api::v1alpha1::Widget>()?
        .resource::<WidgetPolicy>()?;
    let policies = server.objects::<WidgetPolicy>()?;
    let server = server.admit::<Widget>(policy::DeniedImages { policies });
    if cli.status_controller {
        tokio::spawn(status::run(server.client(), server.leadership()));
    }
    server.run().await
}
