//! The Go client module: the API types are rendered here from each kind's schema, and
//! everything else is what k8s.io/code-generator (the release the cluster tools build) writes
//! from them through its own `kube_codegen.sh`: deepcopy functions, a clientset with the
//! status and scale calls, listers, informers and apply configurations, laid out as
//! sample-apiserver's (`pkg/apis/<group>/<version>`, `pkg/generated/...`).
//!
//! Generation runs in a scratch module and needs `go` (1.26 or later) and the Go module proxy
//! or a warm module cache; the generators are installed once under the apiary cache.

mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{File, GENERATED, Project};
use types::GoTypes;

/// Where the Go module goes, and its module path.
#[derive(Clone, Debug)]
pub struct GoClient {
    /// The module path, e.g. `example.com/widget/client-go`.
    pub module: String,
    /// The directory the module is written to.
    pub dir: PathBuf,
}

/// The k8s.io modules' version: the Go modules of [`apiary_cluster::KUBERNETES_RELEASE`].
fn modules_version() -> String {
    apiary_cluster::KUBERNETES_RELEASE.replacen("v1.", "v0.", 1)
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file of the Go module of `project` (relative to `go.dir`).
pub(crate) fn render(project: &Project, go: &GoClient) -> Result<Vec<File>, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let scratch = Scratch(std::env::temp_dir().join(format!("apiary-go-client-{}-{nanos}", std::process::id())));
    let work = &scratch.0;
    for file in sources(project, go) {
        crate::write(&work.join(&file.path), &file.bytes)?;
    }
    run(work, "gofmt", &["-w", "pkg/apis"])?;
    run(work, "go", &["mod", "tidy"])?;
    code_generator(work, &go.module)?;
    let _ = std::fs::remove_dir_all(work.join("hack"));
    run(work, "go", &["mod", "tidy"])?;
    let mut files = Vec::new();
    collect(work, work, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The files written by hand here: `go.mod`, the boilerplate header, and per group-version
/// `doc.go`, `register.go` and `types.go`.
fn sources(project: &Project, go: &GoClient) -> Vec<File> {
    let version = modules_version();
    let go_mod = format!(
        "// {GENERATED}\n\nmodule {}\n\ngo 1.26.0\n\nrequire (\n\tk8s.io/api {version}\n\tk8s.io/apimachinery {version}\n\tk8s.io/client-go {version}\n)\n",
        go.module
    );
    let mut files = vec![
        File {
            path: "go.mod".into(),
            bytes: go_mod.into_bytes(),
        },
        File {
            path: "hack/boilerplate.go.txt".into(),
            bytes: format!("// {GENERATED}\n").into_bytes(),
        },
    ];
    let mut packages: BTreeMap<(&str, &str), GoTypes> = BTreeMap::new();
    for r in &project.resources {
        packages
            .entry((r.meta.group, r.meta.version))
            .or_default()
            .kind(&r.meta, &r.schema);
    }
    for ((group, version), types) in packages {
        let dir = PathBuf::from("pkg/apis").join(group_dir(group)).join(version);
        let text = [
            ("doc.go", types::doc_go(group, version, &project.name)),
            ("register.go", types::register_go(group, version, types.kinds())),
            ("types.go", types.file(version)),
        ];
        for (name, text) in text {
            files.push(File {
                path: dir.join(name),
                bytes: text.into_bytes(),
            });
        }
    }
    files
}

/// A group's package folder: its first DNS label (`custom` for `custom.example.com`), as
/// sample-apiserver's `wardle` is for `wardle.example.com`.
fn group_dir(group: &str) -> String {
    group
        .split('.')
        .next()
        .unwrap_or(group)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Run code-generator's `kube_codegen.sh` over `work/pkg/apis`, as sample-apiserver's
/// `hack/update-codegen.sh` does, with its generators installed under the apiary cache.
fn code_generator(work: &Path, module: &str) -> Result<(), String> {
    let version = modules_version();
    let download = output(
        work,
        "go",
        &["mod", "download", "-json", &format!("k8s.io/code-generator@{version}")],
    )?;
    let info: serde_json::Value = serde_json::from_str(&download).map_err(|e| format!("go mod download: {e}"))?;
    let root = info["Dir"]
        .as_str()
        .ok_or("go mod download: no Dir for k8s.io/code-generator")?;
    let gobin = apiary_cluster::Binaries::cache_dir().join(format!("code-generator-{version}/bin"));
    let script = r#"
set -o errexit -o nounset -o pipefail
source "$1/kube_codegen.sh"
kube::codegen::gen_helpers --boilerplate hack/boilerplate.go.txt pkg/apis
# The OpenAPIModelName methods (zz_generated.model_name.go); the definitions are a Go
# server's business, so they are written to the scratch folder and dropped.
kube::codegen::gen_openapi --output-dir hack/openapi --output-pkg "$2/hack/openapi" \
    --output-model-name-file zz_generated.model_name.go \
    --report-filename hack/api-rule-violations.list --update-report \
    --boilerplate hack/boilerplate.go.txt pkg/apis
kube::codegen::gen_client --with-watch --with-applyconfig \
    --output-dir pkg/generated --output-pkg "$2/pkg/generated" \
    --boilerplate hack/boilerplate.go.txt pkg/apis
"#;
    let mut command = Command::new("bash");
    command
        .args(["-c", script, "kube_codegen", root, module])
        .env("GOBIN", gobin);
    checked(work, command, "kube_codegen.sh").map(drop)
}

/// Run `program args` in `work`; its stdout.
fn output(work: &Path, program: &str, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args);
    checked(work, command, &format!("{program} {}", args.join(" ")))
}

fn run(work: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    output(work, program, args).map(drop)
}

/// Run `command` in `work` with the machine's own Go; its stdout, or an error with its stderr.
fn checked(work: &Path, mut command: Command, what: &str) -> Result<String, String> {
    let out = command
        .current_dir(work)
        // The machine's Go (1.26 or later) runs all of it; never fetch another toolchain.
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| format!("{what}: cannot run it ({e}); the Go client needs Go 1.26 or later"))?;
    if !out.status.success() {
        return Err(format!("{what} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every file under `dir`, relative to `root`.
fn collect(root: &Path, dir: &Path, files: &mut Vec<File>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect(root, &path, files)?;
        } else {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let relative = path.strip_prefix(root).expect("under the root").to_path_buf();
            files.push(File { path: relative, bytes });
        }
    }
    Ok(())
}
