//! Writes to objects that exist, the same requests for every server compared: a merge patch of
//! the spec (an update), of the status subresource, and a server-side apply of the whole
//! object by one field manager. Each request changes `replicas`, so every one is a real write.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::CONNECTIONS;
use crate::client::{Measured, WIDGETS, connect, rate, send_as, widget};

/// One kind of write.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Write {
    /// `PATCH` of `spec.replicas` (merge patch): an update through the main resource.
    Update,
    /// `PATCH` of `status.availableReplicas` through `/status`.
    Status,
    /// Server-side apply of the whole object, forced, by one manager.
    Apply,
}

impl Write {
    /// What the row calls it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Write::Update => "updates (merge patch of the spec)",
            Write::Status => "status updates (merge patch of /status)",
            Write::Apply => "server-side applies",
        }
    }

    /// The request for write number `n` to widget `i`: path, content type and body.
    fn request(self, i: usize, n: usize) -> (String, &'static str, Bytes) {
        let (name, replicas) = (format!("{WIDGETS}/w-{i:06}"), n % 100);
        let merge = "application/merge-patch+json";
        match self {
            Write::Update => (name, merge, format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#).into()),
            Write::Status => (
                format!("{name}/status"),
                merge,
                format!(r#"{{"status":{{"availableReplicas":{replicas}}}}}"#).into(),
            ),
            Write::Apply => {
                let mut object = widget(i);
                object["spec"]["replicas"] = replicas.into();
                let path = format!("{name}?fieldManager=bench&force=true");
                (path, "application/apply-patch+yaml", object.to_string().into())
            }
        }
    }
}

/// `write`s per second to the `objects` widgets `w-000000`… at `addr` (round robin over
/// `CONNECTIONS` connections) for `seconds`, and what each cost process `pid`.
pub(crate) async fn write_rate(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    objects: usize,
    write: Write,
    seconds: f64,
    pid: u32,
) -> Measured {
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr, tls).await);
    }
    let counter = Arc::new(AtomicUsize::new(0));
    rate(senders, seconds, Some(pid), move |mut sender| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let (path, content_type, body) = write.request(n % objects, n);
        async move {
            let (status, answer) = send_as(&mut sender, "PATCH", &path, "application/json", content_type, body).await;
            assert_eq!(status, 200, "{write:?}: {}", String::from_utf8_lossy(&answer));
            sender
        }
    })
    .await
}
