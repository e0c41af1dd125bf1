//! Notes kept as files: an external store that other programs may edit. Each note is
//! `<dir>/<namespace>/<name>.json`; its resourceVersion is the file's modification time in
//! nanoseconds, so an edit made outside the server is a new version, seen by watches.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use apiary::custom::CustomStorage;
use apiary::prelude::*;
use apiary::resource::RESOURCE_VERBS;
use apiary::status::{ApiError, ApiResult};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest note file read; bigger ones are skipped as foreign.
const MAX_FILE: u64 = 1024 * 1024;

/// A note.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(
    crate = "apiary",
    group = "machine.example.com",
    version = "v1",
    kind = "Note",
    namespaced,
    printcolumn(name = "Title", type = "string", json_path = ".spec.title")
)]
pub struct Note {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The note.
    pub spec: NoteSpec,
}

/// What a note says.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct NoteSpec {
    /// A one-line title.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// The body.
    #[serde(default)]
    #[schemars(length(max = 65536))]
    pub text: String,
}

/// Notes in a directory.
pub struct NoteFiles {
    dir: PathBuf,
    /// Serializes this server's read-check-write sequences.
    writes: Mutex<()>,
}

/// Namespaces and names are DNS labels/subdomains: nothing in them can leave the directory.
fn safe(segment: &str) -> bool {
    !segment.is_empty()
        && !segment.starts_with('.')
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn version(modified: SystemTime) -> String {
    modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

impl NoteFiles {
    /// Use (and create) `dir`.
    pub fn open(dir: &Path) -> Result<Self, apiary::Error> {
        std::fs::create_dir_all(dir).map_err(|source| apiary::Error::File {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(NoteFiles {
            dir: dir.to_path_buf(),
            writes: Mutex::new(()),
        })
    }

    fn path(&self, namespace: Option<&str>, name: &str) -> ApiResult<PathBuf> {
        let namespace = namespace.unwrap_or("default");
        if !safe(namespace) || !safe(name) {
            return Err(ApiError::not_found(&Note::META, name));
        }
        Ok(self.dir.join(namespace).join(format!("{name}.json")))
    }

    /// The note in `path`, if it is one; its namespace, name and version come from the file.
    fn read(path: &Path) -> Option<Note> {
        let file = std::fs::metadata(path).ok()?;
        if !file.is_file() || file.len() > MAX_FILE {
            return None;
        }
        let mut note: Note = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        note.metadata.name = Some(path.file_stem()?.to_str()?.to_string());
        note.metadata.namespace = Some(path.parent()?.file_name()?.to_str()?.to_string());
        note.metadata.resource_version = Some(version(file.modified().ok()?));
        Some(note)
    }

    fn get_file(&self, namespace: Option<&str>, name: &str) -> ApiResult<Note> {
        Self::read(&self.path(namespace, name)?).ok_or_else(|| ApiError::not_found(&Note::META, name))
    }

    /// Write `note` atomically (temporary file, then rename); its version always changes.
    fn write(&self, note: &Note, previous: Option<&str>) -> ApiResult<Note> {
        let name = note.metadata.name.as_deref().unwrap_or_default();
        let path = self.path(note.metadata.namespace.as_deref(), name)?;
        let mut stored = note.clone();
        stored.metadata.resource_version = None;
        let bytes = serde_json::to_vec_pretty(&stored).map_err(ApiError::internal)?;
        let dir = path.parent().expect("a note path has a directory");
        std::fs::create_dir_all(dir).map_err(ApiError::internal)?;
        let temporary = dir.join(format!(".{name}.json.tmp"));
        let file = std::fs::File::create(&temporary).map_err(ApiError::internal)?;
        std::io::Write::write_all(&mut &file, &bytes).map_err(ApiError::internal)?;
        // Coarse filesystem clocks can give two quick writes one mtime: step past the old one.
        let modified = file.metadata().and_then(|m| m.modified()).map_err(ApiError::internal)?;
        if previous == Some(version(modified).as_str()) {
            file.set_modified(modified + Duration::from_nanos(1))
                .map_err(ApiError::internal)?;
        }
        file.sync_all().map_err(ApiError::internal)?;
        std::fs::rename(&temporary, &path).map_err(ApiError::internal)?;
        Self::read(&path).ok_or_else(|| ApiError::internal("a written note did not read back"))
    }
}

#[async_trait]
impl CustomStorage<Note> for NoteFiles {
    const VERBS: &'static [&'static str] = RESOURCE_VERBS;

    async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<Note> {
        self.get_file(namespace, name)
    }

    async fn list(&self, namespace: Option<&str>) -> ApiResult<Vec<Note>> {
        let namespaces: Vec<PathBuf> = match namespace {
            Some(ns) if safe(ns) => vec![self.dir.join(ns)],
            Some(_) => Vec::new(),
            None => std::fs::read_dir(&self.dir)
                .map_err(ApiError::internal)?
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_dir())
                .collect(),
        };
        let mut notes = Vec::new();
        for dir in namespaces {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            notes.extend(
                entries
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .filter_map(|p| Self::read(&p)),
            );
        }
        Ok(notes)
    }

    async fn create(&self, note: Note) -> ApiResult<Note> {
        let _writing = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let name = note.metadata.name.clone().unwrap_or_default();
        if self.path(note.metadata.namespace.as_deref(), &name)?.exists() {
            return Err(ApiError::already_exists(&Note::META, &name));
        }
        self.write(&note, None)
    }

    async fn update(&self, note: Note) -> ApiResult<Note> {
        let _writing = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let name = note.metadata.name.clone().unwrap_or_default();
        let current = self.get_file(note.metadata.namespace.as_deref(), &name)?;
        let given = note.metadata.resource_version.as_deref().filter(|v| !v.is_empty());
        if given.is_some_and(|v| Some(v) != current.metadata.resource_version.as_deref()) {
            return Err(ApiError::conflict(&Note::META, &name));
        }
        self.write(&note, current.metadata.resource_version.as_deref())
    }

    async fn delete(&self, namespace: Option<&str>, name: &str) -> ApiResult<Note> {
        let _writing = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let note = self.get_file(namespace, name)?;
        std::fs::remove_file(self.path(namespace, name)?).map_err(ApiError::internal)?;
        Ok(note)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(500)
    }

    async fn ready(&self) -> Result<(), String> {
        std::fs::read_dir(&self.dir).map(drop).map_err(|e| e.to_string())
    }
}
