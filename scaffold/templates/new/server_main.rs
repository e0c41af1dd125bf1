//! `{{ s.name }}-server`: the {{ s.kind }} aggregated API server ({{ s.group }}/{{ s.version }}).

use apiary_runtime::server::{Server, ServerOptions};
use clap::Parser;
use {{ s.crate_name() }}_api::{{ s.kind }};

/// The {{ s.kind }} API server.
#[derive(Parser)]
#[command(name = "{{ s.name }}-server", version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerOptions,
}

#[tokio::main]
async fn main() -> Result<(), apiary_runtime::Error> {
    let cli = Cli::parse();
    cli.server.init_logging();
    Server::new(cli.server)
        .await?
        .resource::<{{ s.kind }}>()?
        .run()
        .await
}
