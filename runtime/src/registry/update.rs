//! Patches and server-side apply on the [`Store`]: each reads, merges and writes at the read
//! revision, retrying when a concurrent writer won (unless the client gave a precondition).

use serde_json::{Value, json};

use super::managed::{self, Writer};
use super::object::{meta_str, metadata_mut, set_url_name};
use super::options::{Part, WriteOptions, Written};
use super::store::{Store, settle};
use crate::status::{ApiError, ApiResult};

impl Store {
    /// Patch an object or its status with a JSON patch or merge patch.
    pub async fn patch(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch: &super::patch::Patch,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        if let super::patch::Patch::Apply(applied) = patch {
            return self.apply(namespace, name, applied, part, options).await;
        }
        if options.force {
            return Err(ApiError::bad_request(
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        self.retrying(name, || async move {
            let current = self.get(namespace, name).await?;
            let mut patched = patch.apply(&current)?;
            // A patch that sets resourceVersion makes it a precondition; otherwise the
            // current one is, and a concurrent write means: read again and retry.
            let precondition = meta_str(&patched, "resourceVersion") != meta_str(&current, "resourceVersion");
            let warnings = self.admission.admit_body(&mut patched, namespace, options)?;
            if meta_str(&patched, "name") != Some(name) {
                return Err(ApiError::bad_request(
                    "the name of an object cannot be changed by a patch",
                ));
            }
            let written = self.replace(namespace, name, &current, patched, part, options).await;
            Ok(settle(written, precondition)?.map(|mut w| {
                w.warnings.extend(warnings);
                w
            }))
        })
        .await
    }

    /// Server-side apply (`application/apply-patch+yaml`): merge `applied` as its field
    /// manager's intent, creating the object when absent.
    pub async fn apply(
        &self,
        namespace: Option<&str>,
        name: &str,
        applied: &Value,
        part: Part,
        options: &WriteOptions,
    ) -> ApiResult<Written> {
        if options.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut applied = applied.clone();
        for key in ["apiVersion", "kind"] {
            if applied.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!("{key} must be set in an apply patch")));
            }
        }
        let warnings = self.admission.admit_body(&mut applied, namespace, options)?;
        set_url_name(&mut applied, name)?;
        metadata_mut(&mut applied).remove("managedFields");
        if let Value::Object(map) = &mut applied {
            match part {
                Part::Main if self.meta.status => {
                    map.remove("status");
                }
                Part::Main => {}
                // Apply to /status: status only.
                Part::Status => map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
            }
        }
        let writer = self.writer(options);
        let (applied, warnings, writer) = (&applied, &warnings, &writer);
        self.retrying(name, || async move {
            let current = match self.get(namespace, name).await {
                Ok(c) => Some(c),
                Err(e) if e.code == 404 && part == Part::Main => None,
                Err(e) => return Err(e),
            };
            let before = current.as_ref().and_then(managed::decode).unwrap_or_default();
            let (mut merged, entries) =
                match managed::apply(current.as_ref(), applied, before.clone(), writer, options.force) {
                    Ok(done) => done,
                    Err(conflicts)
                        if current
                            .as_ref()
                            .is_some_and(|c| upgrades_client_side_apply(c, &conflicts, writer)) =>
                    {
                        managed::apply(current.as_ref(), applied, before.clone(), writer, true)
                            .expect("a forced apply has no conflicts")
                    }
                    Err(conflicts) => return Err(self.apply_conflict(name, &conflicts)),
                };
            let Some(current) = current else {
                managed::set(&mut merged, &entries);
                let mut written = self.create(namespace, merged, options).await?;
                written.warnings.extend(warnings.iter().cloned());
                return Ok(Some(written));
            };
            // Nothing changed, not even ownership: no write (and no new resourceVersion).
            let same_fields = |a: &[managed::Entry], b: &[managed::Entry]| {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| {
                        (&x.manager, &x.operation, &x.subresource, &x.fields)
                            == (&y.manager, &y.operation, &y.subresource, &y.fields)
                    })
            };
            let mut unmanaged = merged.clone();
            metadata_mut(&mut unmanaged).remove("managedFields");
            let mut live = current.clone();
            metadata_mut(&mut live).remove("managedFields");
            if unmanaged == live && same_fields(&before, &entries) {
                return Ok(Some(Written::new(current, false).with_warnings(warnings.clone())));
            }
            managed::set(&mut merged, &entries);
            let precondition = meta_str(applied, "resourceVersion").is_some();
            let written = self.replace(namespace, name, &current, merged, part, options).await;
            Ok(settle(written, precondition)?.map(|mut w| {
                w.warnings.extend(warnings.iter().cloned());
                w
            }))
        })
        .await
    }

    /// The 409 of an apply whose fields other managers own.
    fn apply_conflict(&self, name: &str, conflicts: &[managed::Conflict]) -> ApiError {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({"reason": "FieldManagerConflict", "message": c.who(), "field": super::fieldset::display(&c.path)}))
            .collect();
        ApiError {
            details: Some(json!({"name": name, "group": self.meta.group, "kind": self.meta.plural, "causes": causes})),
            ..ApiError::new(409, "Conflict", managed::conflicts_message(conflicts))
        }
    }
}

/// Whether an apply by kubectl's own manager ("kubectl") conflicts only on fields of the
/// object's client-side `last-applied-configuration`: then it takes them over (as
/// kube-apiserver does, so `kubectl apply --server-side` upgrades objects `kubectl apply`
/// made). Any other manager gets its conflicts.
fn upgrades_client_side_apply(current: &Value, conflicts: &[managed::Conflict], writer: &Writer<'_>) -> bool {
    if writer.manager != "kubectl" {
        return false;
    }
    let Some(last) = current
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return false;
    };
    let last_applied = super::fieldset::paths(&last, writer.schema);
    conflicts.iter().all(|c| last_applied.contains(&c.path))
}
