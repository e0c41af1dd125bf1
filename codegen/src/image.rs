//! `image`: the server as an OCI image, built without a container daemon as `ko` and `jib` do:
//! `cargo build --release`, then an image layout (`oci-layout`, `index.json`, `blobs/`) of two
//! layers: what the binary needs at run time (the C libraries `ldd` names, CA roots, a
//! `nonroot` user 65532 and writable `/tmp`), and the binary. Layers are uncompressed tar with
//! fixed times and owners, so the same binary gives the same digest. Push it with
//! `skopeo copy oci:DIR:TAG docker://REGISTRY/NAME:TAG`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The file under the deploy directory that pins the workload to the last image built.
pub const DIGEST_FILE: &str = "image-digest";

/// The user the image runs as (distroless's `nonroot`), as the generated workload requires.
const NONROOT: u64 = 65532;

/// The digest `cargo xtask image` recorded in `deploy`, if any.
pub fn recorded_digest(deploy: &Path) -> Option<String> {
    let text = std::fs::read_to_string(deploy.join(DIGEST_FILE)).ok()?;
    let digest = text.trim();
    let valid = digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then(|| digest.to_string())
}

/// Build the binary `bin` of the workspace at `root` with `features`; its path.
pub fn build(root: &Path, bin: &str, features: &[String], release: bool) -> Result<PathBuf, String> {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // What `cargo run` sets for the running xtask describes the xtask, not this build; left in,
    // build scripts that watch such variables (ring's CARGO_PKG_*) would be rebuilt here and
    // again by the next `cargo xtask`, a minute of the edit-run loop each way.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let describes_xtask = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref());
        if describes_xtask {
            cargo.env_remove(name.as_ref());
        }
    }
    cargo
        .current_dir(root)
        .args(["build", "--bin", bin, "--message-format=json-render-diagnostics"]);
    if release {
        cargo.arg("--release");
    }
    if !features.is_empty() {
        cargo.args(["--features", &features.join(",")]);
    }
    let output = cargo
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo build --bin {bin} failed"));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo built no executable named {bin}"))
}

/// Write the image of `binary` (installed as `/usr/local/bin/<name>`) as an OCI layout in
/// `dir` (replaced), tagged with `reference`'s tag; the manifest's digest.
pub fn write_layout(binary: &Path, name: &str, reference: &str, dir: &Path) -> Result<String, String> {
    let runtime = layer(&runtime_files(binary)?)?;
    let program = std::fs::read(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let app = layer(&[Entry::file(&format!("usr/local/bin/{name}"), program, 0o755)])?;
    let layers = [runtime, app];
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": format!("{NONROOT}:{NONROOT}"),
            "Entrypoint": [format!("/usr/local/bin/{name}")],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            "WorkingDir": "/home/nonroot",
        },
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest(l)).collect::<Vec<_>>()},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "apiary-codegen: C libraries, CA roots, nonroot user"},
            {"created": "1970-01-01T00:00:00Z", "created_by": format!("apiary-codegen: /usr/local/bin/{name}")},
        ],
    });
    let config = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let tag = tag_of(reference);
    let mut top = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": reference});
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]});

    let _ = std::fs::remove_dir_all(dir);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    let write =
        |path: PathBuf, bytes: &[u8]| std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()));
    for blob in layers
        .iter()
        .map(Vec::as_slice)
        .chain([config.as_slice(), manifest.as_slice()])
    {
        write(blobs.join(&digest(blob)["sha256:".len()..]), blob)?;
    }
    write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write(
        dir.join("index.json"),
        &serde_json::to_vec(&index).map_err(|e| e.to_string())?,
    )?;
    Ok(digest(&manifest))
}

/// The tag of an image reference (`latest` when it names none; a registry port is no tag).
pub fn tag_of(reference: &str) -> &str {
    reference
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or("latest", |(_, tag)| tag)
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!("sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

/// One file or directory of a layer.
struct Entry {
    path: String,
    data: Option<Vec<u8>>,
    mode: u32,
    owner: u64,
}

impl Entry {
    fn file(path: &str, data: Vec<u8>, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            data: Some(data),
            mode,
            owner: 0,
        }
    }

    fn dir(path: &str, mode: u32, owner: u64) -> Entry {
        Entry {
            path: path.into(),
            data: None,
            mode,
            owner,
        }
    }
}

/// What the binary needs at run time: the shared libraries `ldd` resolves (at the paths the
/// loader looks), the host's CA bundle, `/etc/passwd` and `/etc/group` with `nonroot`, a
/// sticky `/tmp` and nonroot's home.
fn runtime_files(binary: &Path) -> Result<Vec<Entry>, String> {
    let ldd = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let mut entries = Vec::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, resolved)) => resolved.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        entries.push(Entry::file(&path[1..], data, 0o755));
    }
    if entries.is_empty() && !ldd.status.success() && !String::from_utf8_lossy(&ldd.stderr).contains("not a dynamic") {
        return Err(format!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&ldd.stderr).trim()
        ));
    }
    let roots = "/etc/ssl/certs/ca-certificates.crt";
    let roots = std::fs::read(roots).map_err(|e| format!("{roots} (the CA roots the image carries): {e}"))?;
    entries.push(Entry::file("etc/ssl/certs/ca-certificates.crt", roots, 0o644));
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    entries.push(Entry::file("etc/passwd", passwd.into_bytes(), 0o644));
    let group = format!("root:x:0:\nnonroot:x:{NONROOT}:\n");
    entries.push(Entry::file("etc/group", group.into_bytes(), 0o644));
    entries.push(Entry::dir("tmp", 0o1777, 0));
    entries.push(Entry::dir("home/nonroot", 0o700, NONROOT));
    Ok(entries)
}

/// A tar layer of `entries` and their parent directories, sorted, with fixed times.
fn layer(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut all: Vec<&Entry> = entries.iter().collect();
    let parents: Vec<Entry> = entries
        .iter()
        .flat_map(|e| {
            Path::new(&e.path)
                .ancestors()
                .skip(1)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.display().to_string())
        .filter(|p| !entries.iter().any(|e| &e.path == p))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|p| Entry::dir(&p, 0o755, 0))
        .collect();
    all.extend(parents.iter());
    all.sort_by(|a, b| a.path.cmp(&b.path));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in all {
        let mut header = tar::Header::new_gnu();
        let (kind, size, path) = match &entry.data {
            Some(data) => (tar::EntryType::Regular, data.len() as u64, entry.path.clone()),
            None => (tar::EntryType::Directory, 0, format!("{}/", entry.path)),
        };
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(entry.mode);
        header.set_uid(entry.owner);
        header.set_gid(entry.owner);
        header.set_mtime(0);
        let data: &[u8] = entry.data.as_deref().unwrap_or_default();
        builder
            .append_data(&mut header, &path, data)
            .map_err(|e| format!("{path}: {e}"))?;
    }
    builder.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_reproducible_and_list_their_parents() {
        let entries = || {
            vec![
                Entry::file("usr/local/bin/x", b"#!".to_vec(), 0o755),
                Entry::dir("tmp", 0o1777, 0),
            ]
        };
        let (a, b) = (layer(&entries()).unwrap(), layer(&entries()).unwrap());
        assert_eq!(digest(&a), digest(&b));
        let mut archive = tar::Archive::new(a.as_slice());
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            paths,
            ["tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/x"]
        );
    }

    #[test]
    fn only_a_sha256_digest_is_taken_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_digest(dir.path()), None);
        std::fs::write(dir.path().join(DIGEST_FILE), "sha256:abc\n").unwrap();
        assert_eq!(recorded_digest(dir.path()), None);
        let good = format!("sha256:{}", "a".repeat(64));
        std::fs::write(dir.path().join(DIGEST_FILE), format!("{good}\n")).unwrap();
        assert_eq!(recorded_digest(dir.path()), Some(good));
    }
}
