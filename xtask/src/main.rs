//! `cargo xtask`: project automation for this repository's examples (apiary-codegen's
//! standard commands: `generate` and `image` for the Widget example, `new` for a project of
//! one's own).
use std::path::Path;

use apiary_codegen::Project;

/// The Widget example's server, as deployed by `examples/widget/deploy`.
fn widget_project() -> Project {
    Project::new(
        "widget-server",
        "widget-system",
        "registry.example.com/apiary/widget-server:0.1.0",
    )
    .resource::<widget_api::Widget>()
    .resource::<widget_api::v1alpha1::Widget>()
    .resource::<widget_api::WidgetPolicy>()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = root.join("examples/widget");
    let project = widget_project().go_client("example.com/apiary/widget-client-go", example.join("client-go"));
    apiary_codegen::cli::main(&project, &root, &example.join("deploy"), &example.join("client"));
}
