//! Admission steps written against a resource's Rust type: the step sees typed new and old
//! objects and runs only for its own resource.

use std::marker::PhantomData;

use async_trait::async_trait;
use serde_json::Value;

use super::{Attributes, Plugin};
use crate::resource::ApiResource;
use crate::status::{ApiError, ApiResult};

/// An admission step for resource `T`, typed. Both methods default to accepting unchanged.
#[async_trait]
pub trait TypedAdmission<T: ApiResource>: Send + Sync + 'static {
    /// Whether [`mutate`](Self::mutate) may change objects; `false` spares every write the
    /// typed decode and re-encode a mutating step needs.
    const MUTATES: bool = true;

    /// The step's name, for logs and errors.
    fn name(&self) -> &str;

    /// Change the new object before the strategy's validation (creates and updates).
    async fn mutate(&self, attributes: &Attributes<'_>, object: &mut T, old: Option<&T>) -> ApiResult<()> {
        let _ = (attributes, object, old);
        Ok(())
    }

    /// Accept or refuse the object (for a delete: the stored one, with `old` the same).
    async fn validate(&self, attributes: &Attributes<'_>, object: &T, old: Option<&T>) -> ApiResult<()> {
        let _ = (attributes, object, old);
        Ok(())
    }
}

/// A [`TypedAdmission`] as a [`Plugin`]: runs only for `T`'s resource, decoding the objects.
pub struct TypedPlugin<T, A> {
    admission: A,
    _type: PhantomData<fn() -> T>,
}

impl<T: ApiResource, A: TypedAdmission<T>> TypedPlugin<T, A> {
    /// Wrap `admission`.
    pub fn new(admission: A) -> Self {
        TypedPlugin {
            admission,
            _type: PhantomData,
        }
    }
}

fn decode<T: ApiResource>(value: &Value) -> ApiResult<T> {
    serde_json::from_value(value.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding {}: {e}", T::META.kind)))
}

fn ours<T: ApiResource>(attributes: &Attributes<'_>) -> bool {
    attributes.meta.group == T::META.group
        && attributes.meta.version == T::META.version
        && attributes.meta.plural == T::META.plural
}

#[async_trait]
impl<T: ApiResource, A: TypedAdmission<T>> Plugin for TypedPlugin<T, A> {
    fn name(&self) -> &str {
        self.admission.name()
    }

    async fn mutate(&self, attributes: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        if !A::MUTATES || !ours::<T>(attributes) {
            return Ok(());
        }
        // An object that does not decode yet is left to the strategy, whose validation
        // reports every schema error in one 422; the validating step sees it decoded.
        let Ok(mut typed) = decode::<T>(object) else {
            return Ok(());
        };
        let old = attributes.old_object.map(decode::<T>).transpose()?;
        self.admission.mutate(attributes, &mut typed, old.as_ref()).await?;
        let mut mutated = serde_json::to_value(&typed).map_err(ApiError::internal)?;
        // The type may not model every metadata field: keep the ones it dropped.
        if let (Some(Value::Object(original)), Some(Value::Object(changed))) =
            (object.get("metadata"), mutated.get_mut("metadata"))
        {
            for (k, v) in original {
                changed.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        *object = mutated;
        Ok(())
    }

    async fn validate(&self, attributes: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        if !ours::<T>(attributes) {
            return Ok(());
        }
        let typed: T = decode(object)?;
        let old = attributes.old_object.map(decode::<T>).transpose()?;
        self.admission.validate(attributes, &typed, old.as_ref()).await
    }
}
