//! Discovery documents: legacy (`APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated
//! (`apidiscovery.k8s.io` v2 and v2beta1 `APIGroupDiscoveryList`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::resource::{ResourceMeta, SUBRESOURCE_VERBS, version_priority};

/// Group name → versions (by Kubernetes version priority, the first preferred) → resources,
/// in declaration order.
pub fn groups(resources: &[ResourceMeta]) -> BTreeMap<&'static str, Vec<(&'static str, Vec<ResourceMeta>)>> {
    let mut out: BTreeMap<&str, Vec<(&str, Vec<ResourceMeta>)>> = BTreeMap::new();
    for r in resources {
        let versions = out.entry(r.group).or_default();
        match versions.iter_mut().find(|(v, _)| *v == r.version) {
            Some((_, list)) => list.push(*r),
            None => versions.push((r.version, vec![*r])),
        }
    }
    for versions in out.values_mut() {
        versions.sort_by(|(a, _), (b, _)| version_priority(a, b));
    }
    out
}

/// `storageVersionHash`: the first 8 bytes of sha256("group/version/kind") of the storage
/// version, base64 (k8s.io/apiserver's `StorageVersionHash`), the same at every served version.
pub fn storage_version_hash(r: &ResourceMeta) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{}/{}/{}", r.group, r.storage_version, r.kind));
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

fn group_versions(group: &str, versions: &[(&str, Vec<ResourceMeta>)]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|(v, _)| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": list, "preferredVersion": list.first().cloned().unwrap_or(Value::Null)})
}

/// `GET /apis` as `APIGroupList`.
pub fn group_list(resources: &[ResourceMeta]) -> Value {
    let groups: Vec<Value> = groups(resources).iter().map(|(g, v)| group_versions(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}` as `APIGroup`, if the group is served.
pub fn group(resources: &[ResourceMeta], name: &str) -> Option<Value> {
    let groups = groups(resources);
    let versions = groups.get(name)?;
    let mut doc = group_versions(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `GET /apis/{group}/{version}` as `APIResourceList`, if served.
pub fn resource_list(resources: &[ResourceMeta], group: &str, version: &str) -> Option<Value> {
    let matching: Vec<&ResourceMeta> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if matching.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in matching {
        let mut main = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced(), "kind": r.kind,
            "verbs": r.verbs, "storageVersionHash": storage_version_hash(r),
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        list.push(main);
        if r.status {
            list.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced(), "kind": r.kind, "verbs": SUBRESOURCE_VERBS}));
        }
        if r.scale.is_some() {
            list.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced(), "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": SUBRESOURCE_VERBS}));
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": list}),
    )
}

/// `GET /apis` as an aggregated `APIGroupDiscoveryList` of `apidiscovery.k8s.io/{version}`.
pub fn aggregated(resources: &[ResourceMeta], version: &str) -> Value {
    let items: Vec<Value> = groups(resources)
        .iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|(v, resources)| {
                    let resources: Vec<Value> = resources.iter().map(aggregated_resource).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(r: &ResourceMeta) -> Value {
    let mut subresources = Vec::new();
    if r.status {
        subresources.push(json!({
            "subresource": "status",
            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "verbs": SUBRESOURCE_VERBS,
        }));
    }
    if r.scale.is_some() {
        subresources.push(json!({
            "subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": SUBRESOURCE_VERBS,
        }));
    }
    let mut doc = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        doc["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        doc["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        doc["subresources"] = Value::Array(subresources);
    }
    doc
}
