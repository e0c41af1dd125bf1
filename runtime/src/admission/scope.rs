//! What one request's admission shares across its steps and hands back to the HTTP layer:
//! the request's deadline (webhook calls are cut to it), and the warnings and audit
//! annotations the steps add.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most warnings one request collects from admission; later ones are dropped.
pub const MAX_WARNINGS: usize = 64;
/// Longest warning kept, in bytes (longer ones are cut), as a `Warning` header must stay small.
pub const MAX_WARNING_LEN: usize = 1024;
/// Most audit annotations one request collects from admission.
pub const MAX_ANNOTATIONS: usize = 256;

/// One request's admission scope (see the module doc).
#[derive(Debug, Default)]
pub struct RequestScope {
    deadline: Option<Instant>,
    notes: Mutex<Notes>,
}

#[derive(Debug, Default)]
struct Notes {
    warnings: Vec<String>,
    annotations: Vec<(String, String)>,
}

impl RequestScope {
    /// A scope for a request that must be answered by `deadline`.
    pub fn until(deadline: Option<Instant>) -> Arc<RequestScope> {
        Arc::new(RequestScope {
            deadline,
            notes: Mutex::default(),
        })
    }

    /// When the request times out, if it has a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add a warning for the client (a `Warning` header): control characters are dropped,
    /// long text is cut, and repeats and warnings past [`MAX_WARNINGS`] are ignored.
    pub fn warn(&self, text: &str) {
        let mut clean: String = text.chars().filter(|c| !c.is_control()).collect();
        if clean.len() > MAX_WARNING_LEN {
            let mut end = MAX_WARNING_LEN;
            while !clean.is_char_boundary(end) {
                end -= 1;
            }
            clean.truncate(end);
        }
        let clean = clean.trim().to_string();
        let mut notes = self.notes();
        if clean.is_empty() || notes.warnings.len() >= MAX_WARNINGS || notes.warnings.contains(&clean) {
            return;
        }
        notes.warnings.push(clean);
    }

    /// Add an audit annotation; the first value given for a key is kept.
    pub fn annotate(&self, key: String, value: String) {
        let mut notes = self.notes();
        if notes.annotations.len() >= MAX_ANNOTATIONS || notes.annotations.iter().any(|(k, _)| *k == key) {
            return;
        }
        notes.annotations.push((key, value));
    }

    /// The warnings so far.
    pub fn warnings(&self) -> Vec<String> {
        self.notes().warnings.clone()
    }

    /// The audit annotations so far.
    pub fn annotations(&self) -> Vec<(String, String)> {
        self.notes().annotations.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_cleaned_bounded_and_deduplicated() {
        let scope = RequestScope::default();
        scope.warn("a\u{7}b");
        scope.warn("ab");
        scope.warn(&"é".repeat(MAX_WARNING_LEN));
        for i in 0..2 * MAX_WARNINGS {
            scope.warn(&format!("w{i}"));
        }
        let warnings = scope.warnings();
        assert_eq!(warnings[0], "ab");
        assert_eq!(warnings.len(), MAX_WARNINGS);
        assert!(warnings[1].len() <= MAX_WARNING_LEN && warnings[1].starts_with('é'));
        scope.annotate("k".into(), "1".into());
        scope.annotate("k".into(), "2".into());
        assert_eq!(scope.annotations(), vec![("k".to_string(), "1".to_string())]);
    }
}
