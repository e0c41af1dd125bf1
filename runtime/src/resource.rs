//! The contract between `#[derive(ApiResource)]` and the runtime: static metadata and hooks.

use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Whether objects of a resource live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/apis/{g}/{v}/namespaces/{ns}/{plural}`.
    Namespaced,
    /// `/apis/{g}/{v}/{plural}`.
    Cluster,
}

/// JSON paths of the scale subresource (as in a CRD's `subresources.scale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// Desired replicas, e.g. `.spec.replicas`.
    pub spec_replicas: &'static str,
    /// Observed replicas, e.g. `.status.availableReplicas`.
    pub status_replicas: &'static str,
    /// Serialized label selector, e.g. `.status.selector`.
    pub label_selector: Option<&'static str>,
}

/// One `kubectl get` column (a CRD's `additionalPrinterColumns` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrintColumn {
    /// Column header.
    pub name: &'static str,
    /// OpenAPI type: integer, number, string, boolean or date.
    pub type_: &'static str,
    /// JSON path into the object.
    pub json_path: &'static str,
    /// Human-readable description (may be empty).
    pub description: &'static str,
    /// 0 is shown by default, higher only with `-o wide`.
    pub priority: i32,
    /// OpenAPI format (may be empty).
    pub format: &'static str,
}

/// Everything the runtime and codegen know about a resource, fixed at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceMeta {
    /// API group, e.g. `custom.example.com`.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Kind, e.g. `Widget`.
    pub kind: &'static str,
    /// Plural resource name used in paths, e.g. `widgets`.
    pub plural: &'static str,
    /// Singular name, e.g. `widget`.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
    /// `kubectl get` aliases.
    pub short_names: &'static [&'static str],
    /// Categories such as `all`.
    pub categories: &'static [&'static str],
    /// Whether the `/status` subresource exists.
    pub status: bool,
    /// The `/scale` subresource, if any.
    pub scale: Option<ScalePaths>,
    /// Printer columns besides Name and Age.
    pub columns: &'static [PrintColumn],
    /// Extra fields usable in field selectors (besides metadata.name/namespace).
    pub selectable_fields: &'static [&'static str],
    /// The verbs served on the resource itself ([`RESOURCE_VERBS`] unless its storage serves fewer).
    pub verbs: &'static [&'static str],
    /// The version objects of the kind are stored at: this one, or the hub it converts to.
    pub storage_version: &'static str,
    /// A deprecated version's warning (sent as a `Warning:` header on every request to it).
    pub deprecation: Option<&'static str>,
    /// Whether the version is served; an unserved one is only read from storage (objects
    /// stored at it are converted) and migrated away from.
    pub served: bool,
}

/// A namespaced kind `K` (`ks.g/v1`, selectable by `.spec.color`) for unit tests.
#[cfg(test)]
pub(crate) const TEST_META: ResourceMeta = ResourceMeta {
    group: "g",
    version: "v1",
    kind: "K",
    plural: "ks",
    singular: "k",
    scope: Scope::Namespaced,
    short_names: &[],
    categories: &[],
    status: false,
    scale: None,
    columns: &[],
    selectable_fields: &[".spec.color"],
    verbs: RESOURCE_VERBS,
    storage_version: "v1",
    deprecation: None,
    served: true,
};

/// The HTTP verbs Kubernetes knows, as used in discovery and authorization.
pub const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of the status and scale subresources.
pub const SUBRESOURCE_VERBS: &[&str] = &["get", "patch", "update"];

/// One entry of a resource's route table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Path template in axum syntax, e.g. `/apis/g/v/namespaces/{namespace}/widgets/{name}`.
    pub path: String,
    /// What is addressed: the collection, one object or a subresource.
    pub target: Target,
    /// Kubernetes verbs served on it.
    pub verbs: Vec<&'static str>,
}

/// What a route addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A collection in one namespace (or the cluster-scoped collection).
    Collection,
    /// The collection across all namespaces (namespaced resources only).
    AllNamespaces,
    /// One named object.
    Object,
    /// `/status`.
    Status,
    /// `/scale`.
    Scale,
}

impl ResourceMeta {
    /// The kind of its lists: `<Kind>List`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// A `<Kind>List` of `items` with list metadata `metadata`.
    pub fn list_of(&self, metadata: serde_json::Value, items: Vec<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({"apiVersion": self.api_version(), "kind": self.list_kind(), "metadata": metadata, "items": items})
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage version as `group/version`.
    pub fn storage_api_version(&self) -> String {
        ResourceMeta {
            version: self.storage_version,
            ..*self
        }
        .api_version()
    }

    /// `plural.group`, the name used in error messages and RBAC.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group`, the name used in 422 Invalid messages.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether the resource serves `verb` (subresources serve all of theirs).
    pub fn serves(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// Whether objects live in namespaces.
    pub const fn namespaced(&self) -> bool {
        matches!(self.scope, Scope::Namespaced)
    }

    /// `/apis/{group}/{version}` (or `/api/{version}` for the core group).
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The route table: every path this resource answers, with its verbs.
    pub fn routes(&self) -> Vec<Route> {
        let base = self.group_version_path();
        let collection = if self.namespaced() {
            format!("{base}/namespaces/{{namespace}}/{}", self.plural)
        } else {
            format!("{base}/{}", self.plural)
        };
        let object = format!("{collection}/{{name}}");
        let served = |verbs: &[&'static str]| verbs.iter().copied().filter(|v| self.serves(v)).collect();
        let mut routes = vec![
            Route {
                path: collection,
                target: Target::Collection,
                verbs: served(&["create", "deletecollection", "list", "watch"]),
            },
            Route {
                path: object.clone(),
                target: Target::Object,
                verbs: served(&["delete", "get", "patch", "update"]),
            },
        ];
        if self.namespaced() {
            routes.push(Route {
                path: format!("{base}/{}", self.plural),
                target: Target::AllNamespaces,
                verbs: served(&["list", "watch"]),
            });
        }
        if self.status {
            routes.push(Route {
                path: format!("{object}/status"),
                target: Target::Status,
                verbs: SUBRESOURCE_VERBS.to_vec(),
            });
        }
        if self.scale.is_some() {
            routes.push(Route {
                path: format!("{object}/scale"),
                target: Target::Scale,
                verbs: SUBRESOURCE_VERBS.to_vec(),
            });
        }
        routes
    }
}

/// Kubernetes' version priority (`k8s.io/apimachinery/pkg/version.CompareKubeAwareVersionStrings`):
/// GA before beta before alpha, higher numbers first, then other names alphabetically.
pub fn version_priority(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(v: &str) -> (u8, u64, u64, &str) {
        let parsed = (|| {
            let rest = v.strip_prefix('v')?;
            let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            let major: u64 = rest[..split].parse().ok()?;
            match &rest[split..] {
                "" => Some((0, major, 0)),
                level => {
                    let (rank, n) = if let Some(n) = level.strip_prefix("beta") {
                        (1, n)
                    } else {
                        (2, level.strip_prefix("alpha")?)
                    };
                    Some((rank, major, n.parse().ok()?))
                }
            }
        })();
        match parsed {
            // Higher majors and minors first.
            Some((rank, major, minor)) => (rank, u64::MAX - major, u64::MAX - minor, ""),
            None => (3, 0, 0, v),
        }
    }
    key(a).cmp(&key(b))
}

/// One field error from validation, reported in a 422 Invalid `Status`'s `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The Kubernetes cause reason, e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: String,
    /// Dotted field path, e.g. `spec.replicas`.
    pub field: String,
    /// The message, e.g. `Invalid value: 101: must be at most 100`.
    pub message: String,
}

impl FieldError {
    /// `field: Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &impl Serialize, detail: impl std::fmt::Display) -> Self {
        let value = serde_json::to_string(value).unwrap_or_default();
        FieldError {
            reason: "FieldValueInvalid".into(),
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    /// `field: Required value`.
    pub fn required(field: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        let detail = detail.to_string();
        FieldError {
            reason: "FieldValueRequired".into(),
            field: field.into(),
            message: if detail.is_empty() {
                "Required value".into()
            } else {
                format!("Required value: {detail}")
            },
        }
    }

    /// `field: Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        FieldError {
            reason: "FieldValueForbidden".into(),
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    /// `field: Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &impl Serialize) -> Self {
        let value = serde_json::to_string(value).unwrap_or_default();
        FieldError {
            reason: "FieldValueDuplicate".into(),
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// `field: Unsupported value: <value>: supported values: ...`.
    pub fn not_supported(field: impl Into<String>, value: &impl Serialize, supported: &[String]) -> Self {
        let value = serde_json::to_string(value).unwrap_or_default();
        FieldError {
            reason: "FieldValueNotSupported".into(),
            field: field.into(),
            message: format!("Unsupported value: {value}: supported values: {}", supported.join(", ")),
        }
    }

    /// `field: Invalid value: <type>: <detail>`, for values of the wrong type.
    pub fn type_invalid(field: impl Into<String>, got: &str, detail: impl std::fmt::Display) -> Self {
        FieldError {
            reason: "FieldValueTypeInvalid".into(),
            field: field.into(),
            message: format!("Invalid value: \"{got}\": {detail}"),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A type the runtime can serve. Implemented by `#[derive(ApiResource)]`; not by hand.
///
/// Not to be confused with `kube::core::ApiResource`, a struct describing a resource at run
/// time; this trait lives in the type namespace of `apiary_runtime`, the derive of the same
/// name in its macro namespace (as `serde::Serialize` does).
pub trait ApiResource:
    kube_core::Resource<DynamicType = ()>
    + schemars::JsonSchema
    + Clone
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Static metadata: GVK, names, scope, subresources, columns.
    const META: ResourceMeta;

    /// Set defaults on an object before validation (the `default = fn` hook).
    fn apply_defaults(&mut self) {}

    /// Check an object beyond its schema (the `validate = fn` hook), on create and update.
    fn validate(&self) -> Vec<FieldError> {
        Vec::new()
    }

    /// Check an update against the stored object `old` (the `validate_update = fn` hook:
    /// transition rules, immutable fields), after [`ApiResource::validate`].
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let _ = old;
        Vec::new()
    }

    /// This version's object (JSON) converted to the storage version: the identity for the
    /// storage version; a conversion through `From`/`TryFrom` for a version with a `hub`.
    fn to_storage(object: serde_json::Value) -> Result<serde_json::Value, String> {
        Ok(object)
    }

    /// A storage-version object (JSON) converted to this version.
    fn from_storage(object: serde_json::Value) -> Result<serde_json::Value, String> {
        Ok(object)
    }

    /// The structural OpenAPI v3 schema of the object, GVK-tagged, `metadata` by reference.
    fn openapi_schema() -> serde_json::Value {
        crate::schema::structural::<Self>(&Self::META)
    }
}

/// `<Kind>List`: what a list request returns (`WidgetList` is `List<Widget>`).
#[derive(Clone, Debug)]
pub struct List<T> {
    /// `resourceVersion`, `continue`, `remainingItemCount`.
    pub metadata: ListMeta,
    /// The objects.
    pub items: Vec<T>,
    _kind: PhantomData<T>,
}

impl<T> List<T> {
    /// A list of `items` with the given list metadata.
    pub fn new(metadata: ListMeta, items: Vec<T>) -> Self {
        List {
            metadata,
            items,
            _kind: PhantomData,
        }
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List::new(ListMeta::default(), Vec::new())
    }
}

impl<T: ApiResource> Serialize for List<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("List", 4)?;
        s.serialize_field("apiVersion", &T::META.api_version())?;
        s.serialize_field("kind", &T::META.list_kind())?;
        s.serialize_field("metadata", &self.metadata)?;
        s.serialize_field("items", &self.items)?;
        s.end()
    }
}

impl<'de, T: ApiResource> Deserialize<'de> for List<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(bound = "T: DeserializeOwned")]
        struct Raw<T> {
            #[serde(default)]
            metadata: ListMeta,
            #[serde(default = "Vec::new")]
            items: Vec<T>,
        }
        let raw = Raw::<T>::deserialize(deserializer)?;
        Ok(List::new(raw.metadata, raw.items))
    }
}
