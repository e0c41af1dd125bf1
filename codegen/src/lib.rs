//! Code generation from `ApiResource` types: manifests, OpenAPI files and typed clients (see issue 6).
