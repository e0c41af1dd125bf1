//! The typed client crate: Rust types rendered from each resource's structural schema (as
//! kopium does for CRDs), `kube::Resource` impls, and status/scale helpers on `kube::Api`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use apiary_runtime::ResourceMeta;
use askama::Template;
use serde_json::Value;

use crate::schema::{Shape, optional, pascal, properties, shape};
use crate::{File, GENERATED, Project};

#[derive(Template)]
#[template(path = "client_cargo.toml", escape = "none")]
struct CargoToml<'a> {
    header: String,
    crate_name: &'a str,
    version: &'a str,
    group_versions: String,
    workspace: bool,
}

#[derive(Template)]
#[template(path = "client_lib.rs", escape = "none")]
struct LibRs {
    header: String,
    group_versions: String,
    /// Each group's preferred version, re-exported at the crate root.
    preferred: Vec<String>,
    /// A module per version.
    modules: Vec<String>,
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "static",
    "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while",
];

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if KEYWORDS.contains(&out.as_str()) {
        out.insert_str(0, "r#");
    }
    out
}

fn docs(out: &mut String, indent: &str, schema: &Value) {
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        for line in d.lines() {
            let _ = writeln!(out, "{indent}/// {}", line.trim_end());
        }
    }
}

/// k8s-openapi's time and int-or-string types, which have no `Default`.
const TIME: &str = "k8s_openapi::apimachinery::pkg::apis::meta::v1::Time";
const INT_OR_STRING: &str = "k8s_openapi::apimachinery::pkg::util::intstr::IntOrString";
const QUANTITY: &str = "k8s_openapi::apimachinery::pkg::api::resource::Quantity";

/// Renders types depth-first; each named type once.
#[derive(Default)]
struct Types {
    out: String,
    named: BTreeSet<String>,
    /// Types without a `Default` (enums, and structs that require one): a struct requiring
    /// one of them cannot derive `Default` either, rather than invent a value.
    no_default: BTreeSet<String>,
}

impl Types {
    /// The Rust type for `schema`, rendering named types it needs.
    fn ty(&mut self, name: &str, schema: &Value) -> String {
        match shape(schema) {
            Shape::ObjectMeta => "ObjectMeta".into(),
            Shape::Json => "serde_json::Value".into(),
            Shape::Quantity => QUANTITY.into(),
            Shape::IntOrString => INT_OR_STRING.into(),
            Shape::Enum(values) => {
                self.enumeration(name, schema, values);
                name.into()
            }
            Shape::Time => TIME.into(),
            Shape::String => "String".into(),
            Shape::Int32 => "i32".into(),
            Shape::Int64 => "i64".into(),
            Shape::Number => "f64".into(),
            Shape::Bool => "bool".into(),
            Shape::Array(items) => format!("Vec<{}>", self.ty(name, items)),
            Shape::Struct => {
                self.structure(name, schema, None);
                name.into()
            }
            Shape::Map(Some(inner)) => format!("std::collections::BTreeMap<String, {}>", self.ty(name, inner)),
            Shape::Map(None) => "std::collections::BTreeMap<String, serde_json::Value>".into(),
        }
    }

    fn enumeration(&mut self, name: &str, schema: &Value, values: &[Value]) {
        if !self.named.insert(name.into()) {
            return;
        }
        self.no_default.insert(name.into());
        let mut out = String::new();
        docs(&mut out, "", schema);
        // No `Default`: the schema names no default value, so the client invents none.
        out.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]\n");
        let _ = writeln!(out, "pub enum {name} {{");
        for value in values.iter().filter_map(Value::as_str) {
            let variant = pascal(value);
            if variant != value {
                let _ = writeln!(out, "    #[serde(rename = {value:?})]");
            }
            let _ = writeln!(out, "    {variant},");
        }
        out.push_str("}\n\n");
        self.out.push_str(&out);
    }

    fn structure(&mut self, name: &str, schema: &Value, resource: Option<&ResourceMeta>) {
        if !self.named.insert(name.into()) {
            return;
        }
        let mut fields = String::new();
        let mut defaultable = true;
        for (key, field) in properties(schema) {
            if resource.is_some() && (key == "apiVersion" || key == "kind") {
                continue; // set by the server; kube sends what it is given
            }
            let ty = self.ty(&format!("{name}{}", pascal(key)), field);
            let rust = snake(key);
            docs(&mut fields, "    ", field);
            let optional = optional(schema, key, field);
            let rename = if rust.trim_start_matches("r#") != key.as_str() {
                format!("rename = {key:?}, ")
            } else {
                String::new()
            };
            if key == "metadata" {
                fields.push_str("    #[serde(default)]\n");
                let _ = writeln!(fields, "    pub {rust}: {ty},");
            } else if optional {
                let _ = writeln!(
                    fields,
                    "    #[serde({rename}default, skip_serializing_if = \"Option::is_none\")]\n    pub {rust}: Option<{ty}>,"
                );
            } else {
                if !rename.is_empty() {
                    let _ = writeln!(fields, "    #[serde({})]", rename.trim_end_matches(", "));
                }
                defaultable &= !(self.no_default.contains(&ty) || ty == TIME || ty == INT_OR_STRING);
                let _ = writeln!(fields, "    pub {rust}: {ty},");
            }
        }
        if !defaultable {
            self.no_default.insert(name.into());
        }
        let mut out = String::new();
        docs(&mut out, "", schema);
        let default = if defaultable { "Default, " } else { "" };
        let _ = writeln!(
            out,
            "#[derive(Clone, Debug, {default}PartialEq, Serialize, Deserialize)]"
        );
        let _ = write!(out, "pub struct {name} {{\n{fields}}}\n\n");
        if let Some(meta) = resource {
            out.push_str(&resource_impl(name, meta, schema));
        }
        self.out.push_str(&out);
    }
}

fn resource_impl(name: &str, m: &ResourceMeta, schema: &Value) -> String {
    let scope = if m.namespaced() {
        "k8s_openapi::NamespaceResourceScope"
    } else {
        "k8s_openapi::ClusterResourceScope"
    };
    let mut out = format!(
        "impl kube::Resource for {name} {{
    type DynamicType = ();
    type Scope = {scope};
    fn kind(_: &()) -> Cow<'_, str> {{
        {kind:?}.into()
    }}
    fn group(_: &()) -> Cow<'_, str> {{
        {group:?}.into()
    }}
    fn version(_: &()) -> Cow<'_, str> {{
        {version:?}.into()
    }}
    fn api_version(_: &()) -> Cow<'_, str> {{
        {api_version:?}.into()
    }}
    fn plural(_: &()) -> Cow<'_, str> {{
        {plural:?}.into()
    }}
    fn meta(&self) -> &ObjectMeta {{
        &self.metadata
    }}
    fn meta_mut(&mut self) -> &mut ObjectMeta {{
        &mut self.metadata
    }}
}}

",
        kind = m.kind,
        group = m.group,
        version = m.version,
        api_version = m.api_version(),
        plural = m.plural,
    );
    let status_ty = properties(schema)
        .any(|(k, _)| k == "status")
        .then(|| format!("{name}Status"));
    if !m.status && m.scale.is_none() {
        return out;
    }
    let _ = writeln!(out, "/// Status and scale helpers for `kube::Api<{name}>`.");
    let _ = writeln!(out, "#[allow(async_fn_in_trait)]\npub trait {name}ApiExt {{");
    if let (true, Some(status)) = (m.status, &status_ty) {
        let _ = writeln!(
            out,
            "    /// Replace the `/status` of `name` with `status` (a merge patch).\n    async fn set_status(&self, name: &str, status: &{status}) -> kube::Result<{name}>;"
        );
    }
    if m.scale.is_some() {
        let _ = writeln!(
            out,
            "    /// Set the desired replicas of `name` through `/scale`.\n    async fn scale_to(&self, name: &str, replicas: i32) -> kube::Result<k8s_openapi::api::autoscaling::v1::Scale>;"
        );
    }
    let _ = writeln!(out, "}}\n\nimpl {name}ApiExt for kube::Api<{name}> {{");
    if let (true, Some(status)) = (m.status, &status_ty) {
        let _ = writeln!(
            out,
            "    async fn set_status(&self, name: &str, status: &{status}) -> kube::Result<{name}> {{
        let patch = serde_json::json!({{\"status\": status}});
        self.patch_status(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
    }}"
        );
    }
    if m.scale.is_some() {
        let _ = writeln!(
            out,
            "    async fn scale_to(&self, name: &str, replicas: i32) -> kube::Result<k8s_openapi::api::autoscaling::v1::Scale> {{
        let patch = serde_json::json!({{\"spec\": {{\"replicas\": replicas}}}});
        self.patch_scale(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
    }}"
        );
    }
    out.push_str("}\n\n");
    out
}

/// `Cargo.toml`, `src/lib.rs` and a module per API version (`src/v1.rs`, ...) of the client
/// crate; the crate root re-exports each group's preferred version.
pub fn render(project: &Project) -> Result<Vec<File>, String> {
    let metas = project.metas();
    let groups = apiary_runtime::discovery::groups(&metas);
    let mut modules: Vec<(&str, Types)> = Vec::new();
    let mut preferred: BTreeSet<&str> = BTreeSet::new();
    for versions in groups.values() {
        if let Some((first, _)) = versions.first() {
            preferred.insert(first);
        }
        for (version, _) in versions {
            if !modules.iter().any(|(v, _)| v == version) {
                modules.push((version, Types::default()));
            }
        }
    }
    for r in &project.resources {
        if let Some((_, types)) = modules.iter_mut().find(|(v, _)| *v == r.meta.version) {
            types.structure(r.meta.kind, &r.schema, Some(&r.meta));
        }
    }
    let group_versions = project
        .resources
        .iter()
        .map(|r| r.meta.api_version())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ");
    let cargo = CargoToml {
        header: format!("# {GENERATED}"),
        crate_name: &project.client_crate,
        version: env!("CARGO_PKG_VERSION"),
        group_versions: group_versions.clone(),
        workspace: project.client_workspace,
    }
    .render()
    .map_err(|e| e.to_string())?;
    let lib = LibRs {
        header: format!("// {GENERATED}"),
        group_versions,
        preferred: preferred.into_iter().map(str::to_string).collect(),
        modules: modules.iter().map(|(v, _)| v.to_string()).collect(),
    }
    .render()
    .map_err(|e| e.to_string())?;
    let mut files = vec![
        File {
            path: PathBuf::from("Cargo.toml"),
            bytes: format!("{cargo}\n").into_bytes(),
        },
        File {
            path: PathBuf::from("src/lib.rs"),
            bytes: format!("{lib}\n").into_bytes(),
        },
    ];
    for (version, types) in modules {
        let text = format!(
            "// {GENERATED}\n//! The {version} types.\n#![allow(clippy::derive_partial_eq_without_eq)]\n\nuse std::borrow::Cow;\n\nuse serde::{{Deserialize, Serialize}};\n\nuse super::ObjectMeta;\n\n{}\n",
            types.out.trim_end()
        );
        files.push(File {
            path: PathBuf::from(format!("src/{version}.rs")),
            bytes: text.into_bytes(),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(snake("availableReplicas"), "available_replicas");
        assert_eq!(snake("type"), "r#type");
        assert_eq!(pascal("Running"), "Running");
        assert_eq!(pascal("not-ready"), "NotReady");
    }

    #[test]
    fn schema_types_map_to_kubernetes_types_and_invent_no_defaults() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string", "enum": ["Fast", "slow-ish"]},
                "at": {"type": "string", "format": "date-time"},
                "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "memory": {"x-kubernetes-int-or-string": true,
                           "pattern": "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))$"},
                "inner": {"type": "object", "properties": {"size": {"type": "integer"}}},
            },
        });
        let mut types = Types::default();
        types.structure("Thing", &schema, None);
        let out = types.out;
        assert!(
            out.contains("#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]\npub enum ThingMode")
        );
        assert!(!out.contains("#[default]"), "{out}");
        assert!(out.contains("#[serde(rename = \"slow-ish\")]\n    SlowIsh,"), "{out}");
        assert!(out.contains(&format!("pub at: Option<{TIME}>")), "{out}");
        assert!(out.contains(&format!("pub port: Option<{INT_OR_STRING}>")), "{out}");
        assert!(out.contains(&format!("pub memory: Option<{QUANTITY}>")), "{out}");
        // A required enum has no default, so neither has the struct; the optional-only one has.
        assert!(
            out.contains("#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]\npub struct Thing {"),
            "{out}"
        );
        assert!(
            out.contains("#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]\npub struct ThingInner"),
            "{out}"
        );
    }
}
