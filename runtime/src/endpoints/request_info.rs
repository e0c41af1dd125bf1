//! What a request asks for, in authorization terms (k8s.io/apiserver's `RequestInfo`): a
//! resource request (verb, group, version, resource, subresource, namespace, name) or a
//! non-resource request (verb and path).

use std::borrow::Cow;

/// The attributes of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Under `/apis/{group}/{version}/...` or `/api/{version}/...` with a resource.
    pub is_resource: bool,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection;
    /// for non-resource requests the lower-case HTTP method (get, post, put, ...).
    pub verb: Verb,
    /// The request path.
    pub path: String,
    /// API group ("" for the core group).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace, for namespaced requests.
    pub namespace: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource such as `status` or `scale`.
    pub subresource: String,
    /// Object name.
    pub name: String,
    /// `labelSelector` of a list, watch or deletecollection (authorized with its requirements).
    pub label_selector: String,
    /// `fieldSelector` of a list, watch or deletecollection.
    pub field_selector: String,
}

/// A request's verb, as authorization, audit, metrics and limits read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `get`: one object (GET or HEAD), or a non-resource path read with GET.
    #[default]
    Get,
    /// `list`: a collection.
    List,
    /// `watch`: a collection's changes.
    Watch,
    /// `create`: POST.
    Create,
    /// `update`: PUT.
    Update,
    /// `patch`: PATCH (also server-side apply).
    Patch,
    /// `delete`: one object, or a non-resource path.
    Delete,
    /// `deletecollection`.
    DeleteCollection,
    /// Any other: a non-resource request's method (`post`, `put`, `head`, `options`), or a
    /// verb only authorization is asked about (`impersonate`, `approve`, `unsafe-delete-ignore-read-errors`).
    Other(String),
}

impl Verb {
    /// The verb as Kubernetes writes it (`deletecollection`, `post`).
    pub fn as_str(&self) -> &str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Other(verb) => verb,
        }
    }

    /// The verb written `name`.
    pub fn named(name: &str) -> Verb {
        match name {
            "get" => Verb::Get,
            "list" => Verb::List,
            "watch" => Verb::Watch,
            "create" => Verb::Create,
            "update" => Verb::Update,
            "patch" => Verb::Patch,
            "delete" => Verb::Delete,
            "deletecollection" => Verb::DeleteCollection,
            other => Verb::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classify a request from its method, path and query (read as the handlers read it).
pub fn request_info(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
    request_info_of(method, path, &super::params::query_map(query))
}

/// [`request_info`] with the query already parsed.
pub fn request_info_of(method: &str, path: &str, q: &std::collections::HashMap<String, String>) -> RequestInfo {
    let watch = super::params::flag(q, "watch");
    let non_resource = || RequestInfo {
        verb: Verb::named(&method.to_ascii_lowercase()),
        path: path.to_string(),
        ..Default::default()
    };
    // Empty segments are kept (`namespaces//widgets` has an empty namespace, not none), and
    // each segment is percent-decoded once, here, for authorization, audit, handler and
    // storage key alike; a segment that does not decode stays as sent (and is refused by
    // `check_path_segments` for its '%').
    let decoded: Vec<Cow<'_, str>> = path
        .trim_matches('/')
        .split('/')
        .map(|p| percent_decode(p, false).unwrap_or(Cow::Borrowed(p)))
        .collect();
    let parts: Vec<&str> = decoded.iter().map(|p| &**p).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        ["api", version, rest @ ..] => ("", *version, rest),
        _ => return non_resource(),
    };
    // `/apis/{g}/{v}` itself is discovery: a non-resource request.
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (*ns, rest),
        // `/api/v1/namespaces/{name}` is the namespace object itself.
        ["namespaces", ns] => ("", &["namespaces", *ns][..]),
        rest => ("", rest),
    };
    let (resource, name, subresource) = match rest {
        [] => return non_resource(),
        [resource] => (*resource, "", ""),
        [resource, name] => (*resource, *name, ""),
        [resource, name, sub, ..] => (*resource, *name, *sub),
    };
    let collection = name.is_empty();
    let verb = match method {
        "GET" | "HEAD" if collection && watch => Verb::Watch,
        "GET" | "HEAD" if collection => Verb::List,
        "GET" | "HEAD" => Verb::Get,
        "POST" => Verb::Create,
        "PUT" => Verb::Update,
        "PATCH" => Verb::Patch,
        "DELETE" if collection => Verb::DeleteCollection,
        "DELETE" => Verb::Delete,
        _ => return non_resource(),
    };
    let selects = matches!(verb, Verb::List | Verb::Watch | Verb::DeleteCollection);
    let selector = |key: &str| q.get(key).filter(|_| selects).cloned().unwrap_or_default();
    RequestInfo {
        is_resource: true,
        label_selector: selector("labelSelector"),
        field_selector: selector("fieldSelector"),
        verb,
        path: path.to_string(),
        group: group.into(),
        version: version.into(),
        namespace: namespace.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        name: name.into(),
    }
}

/// Percent-decode a path segment or (with `plus_as_space`) a query component; `None` when an
/// escape is malformed or the bytes are not UTF-8. Borrowed when there is nothing to decode,
/// as in nearly every request.
pub fn percent_decode(s: &str, plus_as_space: bool) -> Option<Cow<'_, str>> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || (plus_as_space && b == b'+')) {
        return Some(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Why `segment` cannot be a name or namespace in a path (k8s.io/apimachinery's
/// `IsValidPathSegmentName`): it may not be `.` or `..`, nor contain `/` or `%`.
pub fn path_segment_errors(segment: &str) -> Vec<String> {
    if segment == "." || segment == ".." {
        return vec![format!("may not be '{segment}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| segment.contains(*bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

impl RequestInfo {
    /// 400 when the namespace or name in the path could not name a stored object (as
    /// kube-apiserver: `invalid resource name "a/b": [may not contain '/']`).
    pub fn check_path_segments(&self) -> Result<(), crate::status::ApiError> {
        for (what, value) in [("namespace", &self.namespace), ("resource name", &self.name)] {
            let errors = path_segment_errors(value);
            if !errors.is_empty() {
                return Err(crate::status::ApiError::bad_request(format!(
                    "invalid {what} {value:?}: [{}]",
                    errors.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The 403 message kube-apiserver gives when this request is denied to `user`.
    pub fn forbidden_message(&self, user: &str, reason: &str) -> String {
        let mut message = if self.is_resource {
            let resource = if self.subresource.is_empty() {
                self.resource.clone()
            } else {
                format!("{}/{}", self.resource, self.subresource)
            };
            let qualified = if self.group.is_empty() {
                self.resource.clone()
            } else {
                format!("{}.{}", self.resource, self.group)
            };
            let subject = if self.name.is_empty() {
                format!("{qualified} is forbidden")
            } else {
                format!("{qualified} \"{}\" is forbidden", self.name)
            };
            let scope = if self.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", self.namespace)
            };
            format!(
                "{subject}: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                self.verb, self.group
            )
        } else {
            format!("forbidden: User \"{user}\" cannot {} path \"{}\"", self.verb, self.path)
        };
        if !reason.is_empty() {
            message.push_str(": ");
            message.push_str(reason);
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_requests() {
        let i = request_info("GET", "/apis/g.io/v1/namespaces/ns/widgets", None);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("list", "ns", "widgets")
        );
        assert_eq!(
            request_info("GET", "/apis/g.io/v1/widgets", Some("watch=true")).verb,
            Verb::Watch
        );
        let i = request_info("PUT", "/apis/g.io/v1/namespaces/ns/widgets/w/status", None);
        assert_eq!(
            (i.verb.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("update", "w", "status")
        );
        assert_eq!(
            request_info("DELETE", "/apis/g.io/v1/namespaces/ns/widgets", None).verb,
            Verb::DeleteCollection
        );
        let i = request_info("DELETE", "/apis/g.io/v1/policies/p", None);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.name.as_str()),
            ("delete", "", "p")
        );
    }

    #[test]
    fn non_resource_requests() {
        for path in [
            "/apis",
            "/apis/g.io",
            "/apis/g.io/v1",
            "/openapi/v2",
            "/healthz",
            "/version",
        ] {
            let i = request_info("GET", path, None);
            assert!(!i.is_resource, "{path}");
            assert_eq!(i.verb, Verb::Get);
        }
    }

    #[test]
    fn forbidden_messages_match_kube_apiserver() {
        let i = request_info("GET", "/apis/custom.example.com/v1/namespaces/default/widgets/w1", None);
        assert_eq!(
            i.forbidden_message("bob", ""),
            "widgets.custom.example.com \"w1\" is forbidden: User \"bob\" cannot get resource \"widgets\" in API group \"custom.example.com\" in the namespace \"default\""
        );
        let i = request_info("GET", "/apis/custom.example.com/v1/widgets", None);
        assert_eq!(
            i.forbidden_message("bob", "no RBAC policy matched"),
            "widgets.custom.example.com is forbidden: User \"bob\" cannot list resource \"widgets\" in API group \"custom.example.com\" at the cluster scope: no RBAC policy matched"
        );
        let i = request_info("GET", "/metrics", None);
        assert_eq!(
            i.forbidden_message("bob", ""),
            "forbidden: User \"bob\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn selectors_of_lists_are_kept_for_authorization() {
        let i = request_info(
            "GET",
            "/apis/g.io/v1/widgets",
            Some("watch=1&labelSelector=app%3Ddemo&fieldSelector=spec.color%3Dred"),
        );
        assert_eq!(
            (i.verb.as_str(), i.label_selector.as_str(), i.field_selector.as_str()),
            ("watch", "app=demo", "spec.color=red")
        );
        let get = request_info(
            "GET",
            "/apis/g.io/v1/widgets/w?labelSelector=a",
            Some("labelSelector=a"),
        );
        assert_eq!(
            get.label_selector, "",
            "only lists, watches and deletecollection carry selectors"
        );
    }

    #[test]
    fn segments_are_decoded_once_and_checked() {
        let i = request_info("DELETE", "/apis/g.io/v1/namespaces/a/widgets/b%2Fz", None);
        assert_eq!((i.namespace.as_str(), i.name.as_str()), ("a", "b/z"));
        assert_eq!(
            i.check_path_segments().unwrap_err().message,
            "invalid resource name \"b/z\": [may not contain '/']"
        );
        // An empty namespace stays empty: the request is not about the `namespaces` resource.
        let i = request_info("POST", "/apis/g.io/v1/namespaces//widgets", None);
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str()
            ),
            ("create", "", "widgets", "")
        );
        for bad in ["%2e%2e", ".", "%c0%ae", "a%2", "x%25y"] {
            let i = request_info("GET", &format!("/apis/g.io/v1/namespaces/ns/widgets/{bad}"), None);
            assert_eq!(i.check_path_segments().unwrap_err().code, 400, "{bad}");
        }
        assert!(
            request_info("GET", "/apis/g.io/v1/namespaces/ns/widgets/a.b-c", None)
                .check_path_segments()
                .is_ok()
        );
        assert_eq!(percent_decode("a+b%20c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
    }

    #[test]
    fn verbs_read_back_as_written() {
        for verb in [
            Verb::Get,
            Verb::List,
            Verb::Watch,
            Verb::Create,
            Verb::Update,
            Verb::Patch,
            Verb::Delete,
            Verb::DeleteCollection,
            Verb::Other("approve".into()),
        ] {
            assert_eq!(Verb::named(verb.as_str()), verb);
        }
        assert_eq!(request_info("POST", "/healthz", None).verb, Verb::Other("post".into()));
        assert_eq!(
            request_info("OPTIONS", "/apis/g.io/v1/widgets", None).verb.as_str(),
            "options"
        );
    }
}
