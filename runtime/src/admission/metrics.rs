//! Admission metrics under k8s.io/apiserver's names: each phase of the chain, and each
//! webhook call (latency, requests, rejections).

use std::sync::Arc;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::Operation;
use crate::filters::metrics::registered;

/// The admission metrics of one server.
pub struct AdmissionMetrics {
    step: HistogramVec,
    webhook: HistogramVec,
    requests: IntCounterVec,
    rejections: IntCounterVec,
    type_warnings: prometheus::IntGaugeVec,
}

/// Why a webhook refused a request, as `error_type` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The webhook answered and said no.
    Denied,
    /// The webhook could not be called (or its answer was unusable).
    CallingWebhook,
    /// Something failed in this server.
    Internal,
}

impl AdmissionMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &Registry) -> Arc<AdmissionMetrics> {
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            registered(
                registry,
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                    .expect("valid histogram"),
            )
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        Arc::new(AdmissionMetrics {
            step: histogram(
                "apiserver_admission_step_admission_duration_seconds",
                "Admission sub-step latency histogram in seconds, broken out for each operation and API resource and step type (validate or admit).",
                &["operation", "rejected", "type"],
                &[0.005, 0.025, 0.1, 0.5, 1.0, 2.5],
            ),
            webhook: histogram(
                "apiserver_admission_webhook_admission_duration_seconds",
                "Admission webhook latency histogram in seconds, identified by name and broken out for each operation and API resource and type (validate or admit).",
                &["name", "operation", "rejected", "type"],
                &[0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0],
            ),
            requests: counter(
                "apiserver_admission_webhook_request_total",
                "Admission webhook request total, identified by name and broken out for each admission type (validating or mutating) and operation. Additional labels specify whether the request was rejected or not and an HTTP status code.",
                &["code", "name", "operation", "rejected", "type"],
            ),
            rejections: counter(
                "apiserver_admission_webhook_rejection_count",
                "Admission webhook rejection count, identified by name and broken out for each admission type (validating or admit) and operation. Additional labels specify an error type (calling_webhook_error or apiserver_internal_error if an error occurred; no_error otherwise) and optionally a non-zero rejection code if the webhook rejects the request with an HTTP status code (honored by the apiserver when the code is greater or equal to 400).",
                &["error_type", "name", "operation", "rejection_code", "type"],
            ),
            type_warnings: registered(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "apiary_admission_policy_type_warnings",
                        "Type-check warnings of each ValidatingAdmissionPolicy's current version against the kinds it matches on this server (undefined fields).",
                    ),
                    &["policy"],
                )
                .expect("valid gauge"),
            ),
        })
    }

    /// `policy`'s current version has `count` type-check warnings.
    pub fn type_warnings(&self, policy: &str, count: usize) {
        self.type_warnings.with_label_values(&[policy]).set(count as i64);
    }

    /// One webhook call: its latency, its HTTP `code` (0 when there was no answer), and the
    /// rejection it caused with its status code, if any.
    pub fn webhook(
        &self,
        name: &str,
        kind: &str,
        operation: Operation,
        started: Instant,
        code: u16,
        rejection: Option<(Rejection, u16)>,
    ) {
        let rejected = if rejection.is_some() { "true" } else { "false" };
        let op = operation.as_str();
        self.webhook
            .with_label_values(&[name, op, rejected, kind])
            .observe(started.elapsed().as_secs_f64());
        self.requests
            .with_label_values(&[&code.to_string(), name, op, rejected, kind])
            .inc();
        if let Some((why, status)) = rejection {
            let error_type = match why {
                Rejection::Denied => "no_error",
                Rejection::CallingWebhook => "calling_webhook_error",
                Rejection::Internal => "apiserver_internal_error",
            };
            self.rejections
                .with_label_values(&[error_type, name, op, &status.to_string(), kind])
                .inc();
        }
    }
}

/// Times one phase of the chain.
pub struct StepTimer {
    metrics: Arc<AdmissionMetrics>,
    started: Instant,
}

impl StepTimer {
    /// Start timing.
    pub fn start(metrics: Arc<AdmissionMetrics>) -> StepTimer {
        StepTimer {
            metrics,
            started: Instant::now(),
        }
    }

    /// The phase (`admit` or `validate`) ended.
    pub fn done(self, kind: &str, operation: Operation, rejected: bool) {
        self.metrics
            .step
            .with_label_values(&[operation.as_str(), if rejected { "true" } else { "false" }, kind])
            .observe(self.started.elapsed().as_secs_f64());
    }
}
