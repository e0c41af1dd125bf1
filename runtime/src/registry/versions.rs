//! One kind at several API versions, as kube-apiserver's versioning codec: every version's
//! store reads and writes the same keys; objects are stored at the storage version and
//! converted per request, list item and watch event. Objects stored at another version (an
//! earlier storage version) are decoded by the `apiVersion` they were stored with.

use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::fieldset::Schema;
use super::{Store, TypedStrategy};
use crate::resource::{ApiResource, ResourceMeta};
use crate::storage::WatchCache;

impl Store {
    /// A store serving `T` from `storage` under `prefix`; a version of a kind that `siblings`
    /// (stores already made) serve at other versions shares their storage and conversions.
    pub fn serving<T: ApiResource>(
        storage: Arc<WatchCache>,
        prefix: &str,
        siblings: &[Arc<Store>],
    ) -> Result<Store, String> {
        let store = Store::new(Arc::new(TypedStrategy::<T>::default()), storage, prefix)?;
        let versions = match siblings
            .iter()
            .find(|s| s.meta().group == T::META.group && s.meta().kind == T::META.kind)
        {
            Some(sibling) => sibling.versions(),
            None => Versions::new(&T::META),
        };
        versions.add::<T>(store.admission.fields.clone())?;
        Ok(store.with_codec(Codec::new(T::META.api_version(), versions)))
    }
}

/// Converts a JSON object between two versions of a kind.
type Convert = fn(Value) -> Result<Value, String>;

/// One version of a kind: how its objects go to and from the storage version.
struct Version {
    meta: ResourceMeta,
    api_version: String,
    to_storage: Convert,
    from_storage: Convert,
    /// Its schema, compiled for field sets.
    schema: Arc<Schema>,
}

/// Every version of one kind the server knows, shared by the stores that serve them.
pub struct Versions {
    storage: String,
    known: RwLock<Vec<Version>>,
}

impl Versions {
    /// A kind stored at `meta`'s storage version, no version known yet.
    pub fn new(meta: &ResourceMeta) -> Arc<Self> {
        Arc::new(Versions {
            storage: meta.storage_api_version(),
            known: RwLock::new(Vec::new()),
        })
    }

    /// The storage version, `group/version`.
    pub fn storage(&self) -> &str {
        &self.storage
    }

    /// Know `T`'s version; an error when it names another storage version or is known already.
    pub fn add<T: ApiResource>(&self, schema: Arc<Schema>) -> Result<(), String> {
        let meta = T::META;
        if meta.storage_api_version() != self.storage {
            return Err(format!(
                "{} {} is stored as {}, but another version of it as {}: a kind has one storage version",
                meta.api_version(),
                meta.kind,
                meta.storage_api_version(),
                self.storage
            ));
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if known.iter().any(|v| v.api_version == meta.api_version()) {
            return Err(format!("{} {} is served twice", meta.api_version(), meta.kind));
        }
        known.push(Version {
            meta,
            api_version: meta.api_version(),
            to_storage: T::to_storage,
            from_storage: T::from_storage,
            schema,
        });
        Ok(())
    }

    /// Whether objects may need converting: more than one version is known.
    fn several(&self) -> bool {
        self.known.read().unwrap_or_else(|e| e.into_inner()).len() > 1
    }

    fn find<T>(&self, api_version: &str, f: impl FnOnce(&Version) -> T) -> Option<T> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known.iter().find(|v| v.api_version == api_version).map(f)
    }

    /// `object`, at any known version, converted to `target`.
    fn convert(&self, object: Value, target: &str) -> Result<Value, String> {
        let from = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if from == target {
            return Ok(object);
        }
        let to_storage = self
            .find(&from, |v| v.to_storage)
            .ok_or_else(|| format!("stored as {from:?}, a version this server does not know"))?;
        let stored = if from == self.storage {
            object
        } else {
            to_storage(object)?
        };
        if target == self.storage {
            return Ok(stored);
        }
        let from_storage = self
            .find(target, |v| v.from_storage)
            .ok_or_else(|| format!("{target} is not a version of this kind"))?;
        from_storage(stored)
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({} stored as {})", self.served, self.versions.storage)
    }
}

/// One served version's view of its kind's storage.
#[derive(Clone)]
pub struct Codec {
    served: String,
    versions: Arc<Versions>,
}

impl Codec {
    /// The codec of a kind served at its one version.
    pub fn single(meta: &ResourceMeta) -> Self {
        Codec::new(meta.api_version(), Versions::new(meta))
    }

    /// The codec of `served` (`group/version`) among `versions`.
    pub fn new(served: String, versions: Arc<Versions>) -> Self {
        Codec { served, versions }
    }

    /// The kind's versions.
    pub fn versions(&self) -> Arc<Versions> {
        self.versions.clone()
    }

    /// Whether stored objects may be at another version than the served one.
    pub fn converts(&self) -> bool {
        self.versions.several() || self.served != self.versions.storage
    }

    /// Whether `stored` (bytes) is at the served version; `None` when it is not JSON. Reads
    /// `apiVersion` alone, skipping the rest without building a `Value`.
    pub fn stored_at_served(&self, stored: &[u8]) -> Option<bool> {
        #[derive(serde::Deserialize)]
        struct TypeMeta {
            #[serde(rename = "apiVersion")]
            api_version: Option<String>,
        }
        let meta: TypeMeta = serde_json::from_slice(stored).ok()?;
        Some(meta.api_version.as_deref() == Some(self.served.as_str()))
    }

    /// Whether `object` (as stored) is at the storage version.
    pub fn is_storage_version(&self, object: &Value) -> bool {
        object.get("apiVersion").and_then(Value::as_str) == Some(self.versions.storage.as_str())
    }

    /// A stored object at the served version.
    pub fn decode(&self, stored: Value) -> Result<Value, String> {
        if !self.converts() {
            return Ok(stored);
        }
        self.versions.convert(stored, &self.served)
    }

    /// Whether objects are stored at the served version (a write stores them as they are).
    pub fn stores_served(&self) -> bool {
        self.served == self.versions.storage
    }

    /// A served-version object at the storage version.
    pub fn encode(&self, object: Value) -> Result<Value, String> {
        if self.stores_served() {
            return Ok(object);
        }
        self.versions.convert(object, &self.versions.storage)
    }

    /// The kind's other served versions, by version priority.
    pub fn others(&self) -> Vec<ResourceMeta> {
        let known = self.versions.known.read().unwrap_or_else(|e| e.into_inner());
        let mut others: Vec<ResourceMeta> = known
            .iter()
            .filter(|v| v.api_version != self.served && v.meta.served)
            .map(|v| v.meta)
            .collect();
        others.sort_by(|a, b| crate::resource::version_priority(a.version, b.version));
        others
    }

    /// `object`, at any version of the kind, converted to `api_version`.
    pub fn convert(&self, object: Value, api_version: &str) -> Result<Value, String> {
        self.versions.convert(object, api_version)
    }

    /// `object` (at the served version) as `api_version` has it, with that version's schema:
    /// what a manager who wrote at `api_version` sees, for its managedFields.
    pub fn view(&self, object: &Value, api_version: &str) -> Option<(Value, Arc<Schema>)> {
        let schema = self.versions.find(api_version, |v| v.schema.clone())?;
        let converted = self.versions.convert(object.clone(), api_version).ok()?;
        Some((converted, schema))
    }
}

/// A version and its storage version `S` convert both ways: every pair with `TryFrom` (or
/// `From`) both ways, whose errors display.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no conversion to and from its storage version `{S}`",
    label = "`storage = ...` names this type",
    note = "implement `From<{Self}> for {S}` and `From<{S}> for {Self}` (or `TryFrom`, with an error that displays)"
)]
pub trait ConvertsWith<S>: Sized {
    /// This version's object at the storage version.
    fn to_storage_type(self) -> Result<S, String>;
    /// A storage-version object at this version.
    fn from_storage_type(stored: S) -> Result<Self, String>;
}

impl<T, S> ConvertsWith<S> for T
where
    S: TryFrom<T>,
    T: TryFrom<S>,
    <S as TryFrom<T>>::Error: std::fmt::Display,
    <T as TryFrom<S>>::Error: std::fmt::Display,
{
    fn to_storage_type(self) -> Result<S, String> {
        S::try_from(self).map_err(|e| e.to_string())
    }

    fn from_storage_type(stored: S) -> Result<Self, String> {
        T::try_from(stored).map_err(|e| e.to_string())
    }
}

/// `object`, a JSON `V`, at its storage version `S`: what the derive's `to_storage` calls.
pub fn to_storage<V: ApiResource + ConvertsWith<S>, S: ApiResource>(object: Value) -> Result<Value, String> {
    convert_json::<V, S>(object, V::to_storage_type)
}

/// `object`, a JSON `S`, at its version `V`: what the derive's `from_storage` calls.
pub fn from_storage<V: ApiResource + ConvertsWith<S>, S: ApiResource>(object: Value) -> Result<Value, String> {
    convert_json::<S, V>(object, V::from_storage_type)
}

fn convert_json<A: ApiResource, B: ApiResource>(
    object: Value,
    f: impl FnOnce(A) -> Result<B, String>,
) -> Result<Value, String> {
    let from: A =
        serde_json::from_value(object).map_err(|e| format!("not a {} {}: {e}", A::META.api_version(), A::META.kind))?;
    let to = f(from).map_err(|e| {
        format!(
            "cannot convert {} {} to {}: {e}",
            A::META.api_version(),
            A::META.kind,
            B::META.api_version()
        )
    })?;
    let mut value = serde_json::to_value(&to).map_err(|e| e.to_string())?;
    super::object::set_type_meta(&mut value, &B::META);
    Ok(value)
}
