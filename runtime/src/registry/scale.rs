//! The `scale` subresource: an `autoscaling/v1 Scale` view of the object's replica paths,
//! read and written through the [`Store`].

use serde_json::{Map, Value, json};

use super::object::meta_str;
use super::options::{Part, WriteOptions, Written};
use super::store::Store;
use super::store::settle;
use crate::resource::ResourceMeta;
use crate::status::{ApiError, ApiResult};

/// A write to the scale subresource.
#[derive(Debug)]
pub enum ScaleChange {
    /// PUT of a whole `autoscaling/v1 Scale`.
    Replace(Value),
    /// PATCH of the Scale.
    Patch(super::patch::Patch),
}

impl Store {
    /// The structural schema of the resource.
    pub fn schema(&self) -> Value {
        self.admission.schema()
    }

    /// The `autoscaling/v1 Scale` view of an object.
    pub fn to_scale(&self, object: &Value) -> ApiResult<Value> {
        scale_of(&self.meta, object)
    }

    /// GET `/scale`.
    pub async fn get_scale(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        self.meta.scale.ok_or_else(ApiError::path_not_found)?;
        let object = self.get(namespace, name).await?;
        self.to_scale(&object)
    }

    /// PUT or PATCH `/scale`: sets the object's replicas path, runs the full strategy.
    pub async fn update_scale(
        &self,
        namespace: Option<&str>,
        name: &str,
        change: ScaleChange,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        let paths = self.meta.scale.ok_or_else(ApiError::path_not_found)?;
        let change = &change;
        self.retrying(name, || async move {
            let current = self.get(namespace, name).await?;
            let scale = self.to_scale(&current)?;
            let desired = match change {
                ScaleChange::Replace(body) => body.clone(),
                ScaleChange::Patch(patch) => patch.apply(&scale)?,
            };
            // A PUT's resourceVersion is a precondition; a patch's only if the patch set one
            // (the Scale it applies to carries the current one).
            let given = meta_str(&desired, "resourceVersion").filter(|rv| !rv.is_empty());
            let precondition = match change {
                ScaleChange::Replace(_) => given.is_some(),
                ScaleChange::Patch(_) => given != meta_str(&scale, "resourceVersion"),
            };
            if precondition && given != meta_str(&current, "resourceVersion") {
                return Err(ApiError::conflict(&self.meta, name));
            }
            let replicas = match desired.pointer("/spec/replicas") {
                Some(Value::Number(n)) if n.as_i64().is_some_and(|r| (0..=i32::MAX as i64).contains(&r)) => n.clone(),
                Some(other) => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {other}: must be greater than or equal to 0"
                        ),
                    ));
                }
                None => json!(0).as_number().expect("a number").clone(),
            };
            let mut object = current.clone();
            crate::schema::jsonpath::set(&mut object, paths.spec_replicas, Value::Number(replicas))
                .map_err(ApiError::internal)?;
            let written = self.replace(namespace, name, &current, object, Part::Main, options).await;
            match settle(written, precondition)? {
                Some(written) => Ok(Some(Written {
                    object: self.to_scale(&written.object)?,
                    // The write's JSON is the whole object's, not the Scale's.
                    json: None,
                    ..written
                })),
                None => Ok(None),
            }
        })
        .await
    }
}

/// The `autoscaling/v1 Scale` view of an object of `meta` (404 when it has no scale).
pub fn scale_of(meta: &ResourceMeta, object: &Value) -> ApiResult<Value> {
    let paths = meta.scale.ok_or_else(ApiError::path_not_found)?;
    let replicas = |path: &str| {
        crate::schema::jsonpath::get(object, path)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let mut status = json!({"replicas": replicas(paths.status_replicas)});
    if let Some(selector) = paths
        .label_selector
        .and_then(|p| crate::schema::jsonpath::get(object, p))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(selector);
    }
    let metadata = object.get("metadata").cloned().unwrap_or_default();
    let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
    let metadata: Map<String, Value> = metadata
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": replicas(paths.spec_replicas)},
        "status": status,
    }))
}
