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
    T::deserialize(value).map_err(|e| ApiError::bad_request(format!("error decoding {}: {e}", T::META.kind)))
}

/// How a write concerns `T`'s step: not at all, at `T`'s version, or at another version of
/// `T`'s kind, whose objects the step sees converted to `T` (admission's `Equivalent` match).
enum Ours<'a> {
    No,
    Same,
    Converted(&'a crate::registry::versions::Codec),
}

fn ours<'a, T: ApiResource>(attributes: &Attributes<'a>) -> Ours<'a> {
    if attributes.meta.group != T::META.group || attributes.meta.plural != T::META.plural {
        return Ours::No;
    }
    if attributes.meta.version == T::META.version {
        return Ours::Same;
    }
    match attributes.codec {
        Some(codec) => Ours::Converted(codec),
        None => Ours::No,
    }
}

impl Ours<'_> {
    /// `object` as a `T`: converted first when it is at another version.
    fn decode<T: ApiResource>(&self, object: &Value) -> ApiResult<T> {
        match self {
            Ours::Converted(codec) => decode(
                &codec
                    .convert(object.clone(), &T::META.api_version())
                    .map_err(ApiError::bad_request)?,
            ),
            _ => decode(object),
        }
    }
}

#[async_trait]
impl<T: ApiResource, A: TypedAdmission<T>> Plugin for TypedPlugin<T, A> {
    fn name(&self) -> &str {
        self.admission.name()
    }

    fn mutates(&self) -> bool {
        A::MUTATES
    }

    async fn mutate(&self, attributes: &Attributes<'_>, object: &mut Value) -> ApiResult<()> {
        let ours = ours::<T>(attributes);
        if !A::MUTATES || matches!(ours, Ours::No) {
            return Ok(());
        }
        // An object that does not decode yet is left to the strategy, whose validation
        // reports every schema error in one 422; the validating step sees it decoded.
        let Ok(mut typed) = ours.decode::<T>(object) else {
            return Ok(());
        };
        let old = attributes.old_object.map(|o| ours.decode::<T>(o)).transpose()?;
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
        if let Ours::Converted(codec) = ours {
            crate::registry::set_type_meta(&mut mutated, &T::META);
            mutated = codec
                .convert(mutated, &attributes.meta.api_version())
                .map_err(ApiError::bad_request)?;
        }
        *object = mutated;
        Ok(())
    }

    async fn validate(&self, attributes: &Attributes<'_>, object: &Value) -> ApiResult<()> {
        let ours = ours::<T>(attributes);
        if matches!(ours, Ours::No) {
            return Ok(());
        }
        let typed: T = ours.decode(object)?;
        let old = attributes.old_object.map(|o| ours.decode::<T>(o)).transpose()?;
        self.admission.validate(attributes, &typed, old.as_ref()).await
    }
}
