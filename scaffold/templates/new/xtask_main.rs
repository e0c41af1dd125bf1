//! `cargo xtask generate [manifests|certs|openapi|client]... [--out DIR] [--check]`: the
//! deployment (`deploy/`, embedded storage on a 1Gi volume) and the typed client (`client/`).

use std::path::Path;

use apiary_codegen::Project;

fn main() {
    let project = Project::new("{{ s.name }}-server", "{{ s.name }}-system", "{{ s.name }}-server:0.1.0")
        .embedded("1Gi")
        .standalone_client()
        .resource::<{{ s.crate_name() }}_api::{{ s.kind }}>();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    apiary_codegen::cli::main(&project, &root, &root.join("deploy"), &root.join("client"));
}
