//! OpenAPI documents: `/openapi/v2` (Swagger 2.0) and `/openapi/v3/apis/{g}/{v}`, built from
//! the resources' metadata and structural schemas. kubectl reads them for `explain`, for field
//! validation (a PATCH with a `fieldValidation` parameter) and to pick a patch type.

use serde_json::{Map, Value, json};

use crate::registry::patch;
use crate::resource::{ResourceMeta, Route, Target};
use crate::schema::{self, Dialect, LIST_META, OBJECT_META};

/// The OpenAPI name of autoscaling/v1 Scale.
pub const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// A resource with its schema, as the documents need it.
#[derive(Clone, Debug)]
pub struct Documented {
    /// Static metadata.
    pub meta: ResourceMeta,
    /// Structural v3 schema.
    pub schema: Value,
}

fn query(dialect: Dialect, name: &str, ty: &str, description: &str) -> Value {
    match dialect {
        Dialect::V3 => {
            json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
        }
        Dialect::V2 => {
            json!({"name": name, "in": "query", "description": description, "type": ty, "uniqueItems": true})
        }
    }
}

fn path_param(dialect: Dialect, name: &str) -> Value {
    let description = if name == "namespace" {
        "object name and auth scope, such as for teams and projects"
    } else {
        "name of the resource"
    };
    match dialect {
        Dialect::V3 => {
            json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
        }
        Dialect::V2 => {
            json!({"name": name, "in": "path", "required": true, "description": description, "type": "string", "uniqueItems": true})
        }
    }
}

fn write_params(dialect: Dialect) -> Vec<Value> {
    vec![
        query(
            dialect,
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
        ),
        query(
            dialect,
            "fieldManager",
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query(
            dialect,
            "fieldValidation",
            "string",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
        ),
    ]
}

fn list_params(dialect: Dialect) -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query(dialect, n, t, ""))
    .collect()
}

fn body(dialect: Dialect, definition: &str, media: &[&str]) -> (Option<Value>, Option<Value>) {
    match dialect {
        Dialect::V3 => {
            let content: Map<String, Value> = media
                .iter()
                .map(|m| (m.to_string(), json!({"schema": dialect.reference(definition)})))
                .collect();
            (Some(json!({"content": content, "required": true})), None)
        }
        Dialect::V2 => (
            None,
            Some(json!({"name": "body", "in": "body", "required": true, "schema": dialect.reference(definition)})),
        ),
    }
}

fn response(dialect: Dialect, definition: &str, codes: &[&str]) -> Value {
    let media = ["application/json", "application/yaml"];
    let one = match dialect {
        Dialect::V3 => {
            let content: Map<String, Value> = media
                .iter()
                .map(|m| (m.to_string(), json!({"schema": dialect.reference(definition)})))
                .collect();
            json!({"description": "OK", "content": content})
        }
        Dialect::V2 => json!({"description": "OK", "schema": dialect.reference(definition)}),
    };
    let mut responses: Map<String, Value> = codes.iter().map(|c| (c.to_string(), one.clone())).collect();
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(responses)
}

/// The Kubernetes verb of an OpenAPI `x-kubernetes-action`.
fn verb_of_action(action: &str) -> &str {
    match action {
        "post" => "create",
        "put" => "update",
        other => other,
    }
}

/// Path and operations of one route, in the given dialect.
fn operations(dialect: Dialect, meta: &ResourceMeta, route: &Route) -> Value {
    let kind_def = schema::definition_name(meta, meta.kind);
    let list_def = schema::definition_name(meta, &meta.list_kind());
    let (gvk, def) = match route.target {
        Target::Scale => (
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
            SCALE.to_string(),
        ),
        _ => (
            json!({"group": meta.group, "version": meta.version, "kind": meta.kind}),
            kind_def.clone(),
        ),
    };
    let suffix = match route.target {
        Target::Status => "Status",
        Target::Scale => "Scale",
        _ => "",
    };
    let scope = if meta.namespaced() && route.target != Target::AllNamespaces {
        "Namespaced"
    } else {
        ""
    };
    let version = format!("{}{}", meta.version[..1].to_uppercase(), &meta.version[1..]);
    let op_id = |verb: &str, what: &str| format!("{verb}{version}{scope}{what}{suffix}");
    let mut params = Vec::new();
    if route.path.contains("{namespace}") {
        params.push(path_param(dialect, "namespace"));
    }
    if route.path.contains("{name}") {
        params.push(path_param(dialect, "name"));
    }
    params.push(query(
        dialect,
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    ));
    let mut ops = Map::new();
    let mut op = |method: &str,
                  action: &str,
                  id: String,
                  extra: Vec<Value>,
                  request: Option<(&str, &[&str])>,
                  responds: (&str, &[&str])| {
        if !route.verbs.contains(&verb_of_action(action)) {
            return; // the resource's storage does not serve it
        }
        let mut o = json!({
            "tags": [format!("{}_{}", meta.group.replace('.', "_"), meta.version)],
            "operationId": id,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "responses": response(dialect, responds.0, responds.1),
        });
        let mut parameters = extra;
        if let Some((definition, media)) = request {
            let (request_body, body_param) = body(dialect, definition, media);
            if let Some(rb) = request_body {
                o["requestBody"] = rb;
            }
            if let Some(bp) = body_param {
                parameters.insert(0, bp);
                o["consumes"] = json!(media);
            }
        }
        if dialect == Dialect::V2 {
            o["produces"] = json!(["application/json", "application/yaml"]);
            o["schemes"] = json!(["https"]);
        }
        if !parameters.is_empty() {
            o["parameters"] = Value::Array(parameters);
        }
        ops.insert(method.to_string(), o);
    };
    let json_only: &[&str] = &["application/json", "application/yaml"];
    let patch_types: &[&str] = &[patch::APPLY_PATCH, patch::JSON_PATCH, patch::MERGE_PATCH];
    let mut patch_params = write_params(dialect);
    patch_params.push(query(
        dialect,
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests.",
    ));
    match route.target {
        Target::Collection | Target::AllNamespaces => {
            let what = if route.target == Target::AllNamespaces {
                format!("{}ForAllNamespaces", meta.kind)
            } else {
                meta.kind.to_string()
            };
            op(
                "get",
                "list",
                op_id("list", &what),
                list_params(dialect),
                None,
                (&list_def, &["200"]),
            );
            if route.target == Target::Collection {
                op(
                    "post",
                    "post",
                    op_id("create", meta.kind),
                    write_params(dialect),
                    Some((&kind_def, json_only)),
                    (&kind_def, &["200", "201", "202"]),
                );
                let mut params = list_params(dialect);
                params.push(query(dialect, "dryRun", "string", ""));
                op(
                    "delete",
                    "deletecollection",
                    op_id("deletecollection", meta.kind),
                    params,
                    Some((DELETE_OPTIONS, json_only)),
                    (STATUS, &["200"]),
                );
            }
        }
        Target::Object | Target::Status | Target::Scale => {
            op("get", "get", op_id("read", meta.kind), vec![], None, (&def, &["200"]));
            op(
                "put",
                "put",
                op_id("replace", meta.kind),
                write_params(dialect),
                Some((&def, json_only)),
                (&def, &["200", "201"]),
            );
            op(
                "patch",
                "patch",
                op_id("patch", meta.kind),
                patch_params,
                Some((PATCH, patch_types)),
                (&def, &["200", "201"]),
            );
            if route.target == Target::Object {
                let params = vec![
                    query(dialect, "dryRun", "string", ""),
                    query(dialect, "gracePeriodSeconds", "integer", ""),
                    query(dialect, "propagationPolicy", "string", ""),
                ];
                op(
                    "delete",
                    "delete",
                    op_id("delete", meta.kind),
                    params,
                    Some((DELETE_OPTIONS, json_only)),
                    (&def, &["200", "202"]),
                );
            }
        }
    }
    ops.insert("parameters".into(), Value::Array(params));
    Value::Object(ops)
}

/// The component schemas every document carries, in the given dialect.
fn definitions(dialect: Dialect, resources: &[Documented]) -> Map<String, Value> {
    let convert = |v: Value| {
        if dialect == Dialect::V2 { schema::to_v2(&v) } else { v }
    };
    let mut defs = Map::new();
    for r in resources {
        defs.insert(schema::definition_name(&r.meta, r.meta.kind), convert(r.schema.clone()));
        defs.insert(
            schema::definition_name(&r.meta, &r.meta.list_kind()),
            convert(schema::list_schema(&r.meta, Dialect::V3)),
        );
    }
    defs.insert(OBJECT_META.into(), convert(schema::object_meta_schema()));
    defs.insert(LIST_META.into(), convert(schema::list_meta_schema()));
    defs.insert(
        SCALE.into(),
        convert(json!({
            "description": "Scale represents a scaling request for a resource.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": Dialect::V3.reference(OBJECT_META),
                "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "format": "int32", "description": "replicas is the desired number of instances for the scaled object."}}},
                "status": {"type": "object", "required": ["replicas"], "properties": {
                    "replicas": {"type": "integer", "format": "int32", "description": "replicas is the actual number of observed instances of the scaled object."},
                    "selector": {"type": "string", "description": "selector is the label query over pods that should match the replicas count."}
                }}
            },
            "x-kubernetes-group-version-kind": [{"group": "autoscaling", "kind": "Scale", "version": "v1"}]
        })),
    );
    defs.insert(PATCH.into(), json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}));
    defs.insert(DELETE_OPTIONS.into(), json!({"description": "DeleteOptions may be provided when deleting an API object.", "type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    defs.insert(STATUS.into(), json!({"description": "Status is a return value for calls that don't return other objects.", "type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    defs
}

fn paths(dialect: Dialect, resources: &[Documented]) -> Map<String, Value> {
    let mut paths = Map::new();
    for r in resources {
        for route in r.meta.routes() {
            paths.insert(route.path.clone(), operations(dialect, &r.meta, &route));
        }
    }
    paths
}

/// `GET /openapi/v3/apis/{group}/{version}`: the v3 document of one group-version.
pub fn v3_document(resources: &[Documented], group: &str, version: &str) -> Option<Value> {
    let selected: Vec<Documented> = resources
        .iter()
        .filter(|r| r.meta.group == group && r.meta.version == version)
        .cloned()
        .collect();
    if selected.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Apiary", "version": format!("{group}/{version}")},
        "paths": paths(Dialect::V3, &selected),
        "components": {"schemas": definitions(Dialect::V3, &selected)},
    }))
}

/// `GET /openapi/v2`: one Swagger 2.0 document of everything served.
pub fn v2_document(resources: &[Documented], title: &str, version: &str) -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": title, "version": version},
        "paths": paths(Dialect::V2, resources),
        "definitions": definitions(Dialect::V2, resources),
    })
}
