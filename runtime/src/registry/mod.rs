//! The registry, as k8s.io/apiserver's `registry/`: object semantics on top of storage, with a
//! resource's strategy. Handlers call a [`Rest`](rest::Rest) store with decoded JSON.
//!
//! - [`rest`]: the one interface the HTTP layer needs of a resource.
//! - [`strategy`]: a resource's typed hooks and [`Admission`] (type, namespace, schema,
//!   `fieldValidation`, defaults and validation) that every write goes through.
//! - [`store`]: the generic [`Store`] on the key-value storage: create, get, update, delete;
//!   [`update`]: patch and server-side apply; [`list`]: lists and watches; [`scale`]: `/scale`.
//! - [`object`]: object semantics shared by every store (names, metadata, status/spec split);
//!   [`object_meta`]: `metadata` validation as apimachinery's `ValidateObjectMeta`.
//! - [`encoded`]: objects encoded once per stored revision, shared by GETs and lists.
//! - [`options`]: what registry calls take and return.
//! - [`patch`], [`managed`] and [`fieldset`]: JSON and merge patches, `managedFields` and
//!   the field sets server-side apply works on.
//! - [`versions`]: one kind at several versions, converted to and from its storage version;
//!   [`migrate`]: rewriting what is stored at an older version.
//! - [`custom`]: resources served by user code instead of the key-value store.

pub mod custom;
pub mod encoded;
pub mod fieldset;
pub mod list;
pub mod managed;
pub mod migrate;
pub mod object;
pub mod object_meta;
pub mod options;
pub mod patch;
pub mod rest;
pub mod scale;
pub mod store;
pub mod strategy;
mod typed;
pub mod update;
pub mod versions;

pub use list::MAX_LIMIT;
pub use object::set_type_meta;
pub use options::{DeleteOptions, FieldValidation, ListOptions, Listed, Part, WatchEvent, WriteOptions, Written};
pub use scale::ScaleChange;
pub use store::Store;
pub use strategy::{Admission, Change, Prepared, Strategy, TypedStrategy};
pub use typed::Objects;
