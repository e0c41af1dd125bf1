//! The Go API types of one group-version (`types.go`), rendered from each kind's structural
//! schema with the markers k8s.io/code-generator reads, plus `doc.go` and `register.go`.
//! Field names and tags follow the wire format exactly: every JSON key keeps its name, a field
//! the schema lets a client leave out is `omitempty` (and a pointer where Go's zero value would
//! otherwise be sent), integers keep their published width.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use apiary_runtime::ResourceMeta;
use apiary_runtime::resource::RESOURCE_VERBS;
use serde_json::Value;

use crate::GENERATED;
use crate::schema::{Shape, optional, pascal, properties, shape};

/// Where an imported package is used, by its import line.
const META: &str = "metav1 \"k8s.io/apimachinery/pkg/apis/meta/v1\"";
const RUNTIME: &str = "\"k8s.io/apimachinery/pkg/runtime\"";
const RESOURCE: &str = "\"k8s.io/apimachinery/pkg/api/resource\"";
const INTSTR: &str = "\"k8s.io/apimachinery/pkg/util/intstr\"";

/// The scale subresource's typed calls, as k8s.io/api declares them for Deployments, less
/// `ApplyScale`: client-gen would look for Scale's apply configuration inside this module
/// (client-go's own clientset finds it beside its other ones), so a server-side apply of
/// `/scale` goes through `Patch(…, types.ApplyPatchType, …, "scale")`.
const SCALE_METHODS: &str = "\
// +genclient:method=GetScale,verb=get,subresource=scale,result=k8s.io/api/autoscaling/v1.Scale
// +genclient:method=UpdateScale,verb=update,subresource=scale,input=k8s.io/api/autoscaling/v1.Scale,result=k8s.io/api/autoscaling/v1.Scale
";

/// The types of one group-version, rendered depth-first; each named type once.
#[derive(Default)]
pub(super) struct GoTypes {
    /// The kinds and their lists, first in the file.
    roots: String,
    /// The types they need.
    out: String,
    named: BTreeSet<String>,
    imports: BTreeSet<&'static str>,
    kinds: Vec<String>,
}

impl GoTypes {
    /// Add the kind `meta` with its object `schema`, and its list type.
    pub(super) fn kind(&mut self, meta: &ResourceMeta, schema: &Value) {
        let name = meta.kind;
        self.imports.insert(META);
        let mut out = String::from("// +genclient\n");
        if !meta.namespaced() {
            out.push_str("// +genclient:nonNamespaced\n");
        }
        if !meta.status {
            out.push_str("// +genclient:noStatus\n");
        }
        let skipped = skipped_verbs(meta.verbs);
        if !skipped.is_empty() {
            let _ = writeln!(out, "// +genclient:skipVerbs={}", skipped.join(","));
        }
        if meta.scale.is_some() {
            out.push_str(SCALE_METHODS);
        }
        out.push_str("// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object\n\n");
        docs(&mut out, "", schema);
        let _ = writeln!(out, "type {name} struct {{");
        out.push_str("\tmetav1.TypeMeta   `json:\",inline\"`\n\tmetav1.ObjectMeta `json:\"metadata,omitempty\"`\n\n");
        let fields = self.fields(name, schema, true);
        out.push_str(&fields);
        out.push_str("}\n\n");
        let _ = write!(
            out,
            "// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object\n\n\
             // {name}List is a list of {name}.\n\
             type {name}List struct {{\n\
             \tmetav1.TypeMeta `json:\",inline\"`\n\
             \tmetav1.ListMeta `json:\"metadata,omitempty\"`\n\n\
             \tItems []{name} `json:\"items\"`\n}}\n\n"
        );
        self.named.insert(name.into());
        self.kinds.push(name.into());
        self.roots.push_str(&out);
    }

    /// The fields of an object of `schema` (named `name`), rendering the types they need.
    fn fields(&mut self, name: &str, schema: &Value, root: bool) -> String {
        let mut fields = String::new();
        for (key, field) in properties(schema) {
            if root && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                continue; // TypeMeta and ObjectMeta
            }
            let go = pascal(key);
            let ty = self.ty(&format!("{name}{go}"), field);
            docs(&mut fields, "\t", field);
            if !optional(schema, key, field) {
                let _ = writeln!(fields, "\t{go} {ty} `json:\"{key}\"`");
            } else if ty.starts_with("[]") || ty.starts_with("map[") {
                let _ = writeln!(fields, "\t// +optional\n\t{go} {ty} `json:\"{key},omitempty\"`");
            } else {
                // A pointer, so that a zero value the user sets is sent and an unset one is not.
                let _ = writeln!(fields, "\t// +optional\n\t{go} *{ty} `json:\"{key},omitempty\"`");
            }
        }
        fields
    }

    /// The Go type for `schema`, rendering named types it needs.
    fn ty(&mut self, name: &str, schema: &Value) -> String {
        match shape(schema) {
            Shape::ObjectMeta => {
                self.imports.insert(META);
                "metav1.ObjectMeta".into()
            }
            Shape::Json => {
                self.imports.insert(RUNTIME);
                "runtime.RawExtension".into()
            }
            Shape::Quantity => {
                self.imports.insert(RESOURCE);
                "resource.Quantity".into()
            }
            Shape::IntOrString => {
                self.imports.insert(INTSTR);
                "intstr.IntOrString".into()
            }
            Shape::Enum(values) => {
                self.enumeration(name, schema, values);
                name.into()
            }
            Shape::Time => {
                self.imports.insert(META);
                "metav1.Time".into()
            }
            Shape::String => "string".into(),
            Shape::Int32 => "int32".into(),
            Shape::Int64 => "int64".into(),
            Shape::Number => "float64".into(),
            Shape::Bool => "bool".into(),
            Shape::Array(items) => format!("[]{}", self.ty(name, items)),
            Shape::Struct => {
                self.structure(name, schema);
                name.into()
            }
            Shape::Map(Some(inner)) => format!("map[string]{}", self.ty(name, inner)),
            Shape::Map(None) => {
                self.imports.insert(RUNTIME);
                "map[string]runtime.RawExtension".into()
            }
        }
    }

    fn enumeration(&mut self, name: &str, schema: &Value, values: &[Value]) {
        if !self.named.insert(name.into()) {
            return;
        }
        let mut out = String::new();
        docs(&mut out, "", schema);
        let _ = writeln!(out, "// +enum\ntype {name} string\n\nconst (");
        for value in values.iter().filter_map(Value::as_str) {
            let _ = writeln!(out, "\t{name}{} {name} = {value:?}", pascal(value));
        }
        out.push_str(")\n\n");
        self.out.push_str(&out);
    }

    fn structure(&mut self, name: &str, schema: &Value) {
        if !self.named.insert(name.into()) {
            return;
        }
        let fields = self.fields(name, schema, false);
        let mut out = String::new();
        docs(&mut out, "", schema);
        let _ = write!(out, "type {name} struct {{\n{fields}}}\n\n");
        self.out.push_str(&out);
    }

    /// The kinds added, in order.
    pub(super) fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// `types.go` of package `version`.
    pub(super) fn file(&self, version: &str) -> String {
        let imports: Vec<String> = self.imports.iter().map(|i| format!("\t{i}")).collect();
        format!(
            "// {GENERATED}\n\npackage {version}\n\nimport (\n{}\n)\n\n{}{}\n",
            imports.join("\n"),
            self.roots,
            self.out.trim_end()
        )
    }
}

/// code-generator's verbs for which the resource serves no HTTP verb.
fn skipped_verbs(served: &[&str]) -> Vec<&'static str> {
    let serves = |verb: &str| served.contains(&verb);
    let mut skipped = Vec::new();
    for verb in RESOURCE_VERBS {
        if !serves(verb) {
            skipped.push(match verb {
                &"deletecollection" => "deleteCollection",
                other => other,
            });
        }
    }
    if !serves("update") {
        skipped.push("updateStatus");
    }
    if !serves("patch") {
        skipped.extend(["apply", "applyStatus"]);
    }
    skipped
}

/// A doc comment from the schema's description, and the list markers server-side apply
/// merges by.
fn docs(out: &mut String, indent: &str, schema: &Value) {
    let description = schema.get("description").and_then(Value::as_str).unwrap_or_default();
    for line in description.lines().map(str::trim_end) {
        match line {
            "" => out.push_str(&format!("{indent}//\n")),
            line => out.push_str(&format!("{indent}// {line}\n")),
        }
    }
    if let Some(list) = schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        let _ = writeln!(out, "{indent}// +listType={list}");
    }
    for key in schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(key) = key.as_str() {
            let _ = writeln!(out, "{indent}// +listMapKey={key}");
        }
    }
}

/// `doc.go`: the package's code-generator markers and its API group.
/// The OpenAPI model names are the server's (`com.example.custom.v1.Widget`), so a Go server
/// serving these types (openapi-gen) names them as Apiary does.
pub(super) fn doc_go(group: &str, version: &str, server: &str) -> String {
    let model: Vec<&str> = group.rsplit('.').chain([version]).collect();
    let model = model.join(".");
    format!(
        "// {GENERATED}\n\n\
         // Package {version} holds the {version} types of the {group} API, served by {server}.\n\
         //\n\
         // +k8s:deepcopy-gen=package\n\
         // +k8s:openapi-gen=true\n\
         // +k8s:openapi-model-package={model}\n\
         // +groupName={group}\n\
         package {version}\n"
    )
}

/// `register.go`: `SchemeGroupVersion`, `Resource`, `Kind` and `AddToScheme`.
pub(super) fn register_go(group: &str, version: &str, kinds: &[String]) -> String {
    let known: String = kinds
        .iter()
        .map(|k| format!("\t\t&{k}{{}},\n\t\t&{k}List{{}},\n"))
        .collect();
    format!(
        "// {GENERATED}

package {version}

import (
\tmetav1 \"k8s.io/apimachinery/pkg/apis/meta/v1\"
\t\"k8s.io/apimachinery/pkg/runtime\"
\t\"k8s.io/apimachinery/pkg/runtime/schema\"
)

// GroupName is the API group of this package.
const GroupName = {group:?}

// SchemeGroupVersion is the group and version of this package.
var SchemeGroupVersion = schema.GroupVersion{{Group: GroupName, Version: {version:?}}}

// Kind takes an unqualified kind and returns a group-qualified GroupKind.
func Kind(kind string) schema.GroupKind {{
\treturn SchemeGroupVersion.WithKind(kind).GroupKind()
}}

// Resource takes an unqualified resource and returns a group-qualified GroupResource.
func Resource(resource string) schema.GroupResource {{
\treturn SchemeGroupVersion.WithResource(resource).GroupResource()
}}

var (
\t// SchemeBuilder registers this package's types.
\tSchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
\t// AddToScheme adds this package's types to a scheme.
\tAddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {{
\tscheme.AddKnownTypes(SchemeGroupVersion,
{known}\t)
\tmetav1.AddToGroupVersion(scheme, SchemeGroupVersion)
\treturn nil
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiary_runtime::Scope;

    const META: ResourceMeta = ResourceMeta {
        group: "things.example.com",
        version: "v1",
        kind: "Thing",
        plural: "things",
        singular: "thing",
        scope: Scope::Cluster,
        short_names: &[],
        categories: &[],
        status: false,
        scale: None,
        columns: &[],
        selectable_fields: &[],
        verbs: &["get", "list", "watch"],
        storage_version: "v1",
        deprecation: None,
        served: true,
    };

    #[test]
    fn schemas_map_to_wire_exact_go_fields_with_code_generator_markers() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "apiVersion": {"type": "string"},
                "metadata": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                "spec": {"type": "object", "required": ["mode", "count"], "properties": {
                    "mode": {"type": "string", "enum": ["Fast", "slow-ish"]},
                    "count": {"type": "integer", "format": "int32"},
                    "big": {"type": "integer"},
                    "at": {"type": "string", "format": "date-time", "nullable": true},
                    "port": {"x-kubernetes-int-or-string": true},
                    "memory": {"x-kubernetes-int-or-string": true, "pattern": "^[0-9]+$"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "items": {"type": "array", "x-kubernetes-list-type": "map",
                              "x-kubernetes-list-map-keys": ["name"],
                              "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                }},
            },
        });
        let mut types = GoTypes::default();
        types.kind(&META, &schema);
        let out = types.file("v1");
        for expected in [
            // Markers: cluster-scoped, no status, read-only verbs.
            "// +genclient\n// +genclient:nonNamespaced\n// +genclient:noStatus\n",
            "// +genclient:skipVerbs=create,delete,deleteCollection,patch,update,updateStatus,apply,applyStatus\n",
            "// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object\n\ntype Thing struct {",
            "\tmetav1.ObjectMeta `json:\"metadata,omitempty\"`\n\n\tSpec ThingSpec `json:\"spec\"`\n}",
            "type ThingList struct {",
            // Required fields are values without omitempty; optional scalars are pointers.
            "\tMode ThingSpecMode `json:\"mode\"`",
            "\tCount int32 `json:\"count\"`",
            "\tBig *int64 `json:\"big,omitempty\"`",
            "\tAt *metav1.Time `json:\"at,omitempty\"`",
            "\tPort *intstr.IntOrString `json:\"port,omitempty\"`",
            "\tMemory *resource.Quantity `json:\"memory,omitempty\"`",
            // Slices and maps omit when empty, without a pointer.
            "\tTags []string `json:\"tags,omitempty\"`",
            "\tLabels map[string]string `json:\"labels,omitempty\"`",
            "\tRaw *runtime.RawExtension `json:\"raw,omitempty\"`",
            "\t// +listType=map\n\t// +listMapKey=name\n\t// +optional\n\tItems []ThingSpecItems `json:\"items,omitempty\"`",
            // Enums are typed strings with a constant per value.
            "type ThingSpecMode string\n\nconst (\n\tThingSpecModeFast ThingSpecMode = \"Fast\"\n\tThingSpecModeSlowIsh ThingSpecMode = \"slow-ish\"\n)",
            "\t\"k8s.io/apimachinery/pkg/api/resource\"\n",
            "\t\"k8s.io/apimachinery/pkg/util/intstr\"\n",
        ] {
            assert!(out.contains(expected), "{expected}\nnot in:\n{out}");
        }
        assert!(!out.contains("APIVersion"), "{out}");
        let register = register_go(META.group, "v1", types.kinds());
        assert!(register.contains("\t\t&Thing{},\n\t\t&ThingList{},\n"), "{register}");
        let doc = doc_go(META.group, "v1", "thing-server");
        assert!(
            doc.contains(
                "// +k8s:openapi-model-package=com.example.things.v1\n// +groupName=things.example.com\npackage v1\n"
            ),
            "{doc}"
        );
    }
}
