//! `apiary-new` (and `cargo xtask new`): a project of one's own (askama templates under
//! `templates/new/`): a workspace with the API types (`api/`), the server (`server/`) and the
//! standard xtask (`xtask/`), ready for `cargo run`, `cargo test` and `cargo xtask generate`.
//! The getting-started guide (`docs/getting-started.md`) shows these files, and a test keeps
//! the two the same. A crate of its own, needing only askama and clap, so that a fresh clone
//! writes a project in seconds instead of first building the runtime.

use std::path::{Path, PathBuf};

use askama::Template;

/// A file to write: its path relative to an output directory, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Path relative to its output directory.
    pub path: PathBuf,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// The command line of `apiary-new` and `cargo xtask new`.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The directory to create; its name is the project's (`gadget`: crates `gadget-api`,
    /// `gadget-server`).
    pub path: PathBuf,
    /// API group, a DNS name you own (`example.com`).
    #[arg(long)]
    pub group: String,
    /// API version.
    #[arg(long, default_value = "v1alpha1")]
    pub version: String,
    /// Kind, UpperCamelCase (`Gadget`).
    #[arg(long)]
    pub kind: String,
    /// Cluster-scoped objects (default: namespaced).
    #[arg(long)]
    pub cluster: bool,
    /// Where the project takes Apiary's crates from: a checkout's path or a git URL
    /// (default: this checkout).
    #[arg(long)]
    pub apiary: Option<String>,
}

/// Write the project `args` describe, one output line per file, and say what to run next.
pub fn new(args: NewArgs) -> Result<(), String> {
    let name = args.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let apiary = match args.apiary {
        Some(url) if url.contains("://") || url.starts_with("git@") => Apiary::Git(url),
        Some(path) => Apiary::Path(absolute(Path::new(&path))?),
        None => Apiary::Path(absolute(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))?),
    };
    let scaffold = Scaffold {
        name: name.to_string(),
        group: args.group,
        version: args.version,
        kind: args.kind,
        cluster: args.cluster,
        apiary,
    };
    for path in write(&args.path, &scaffold)? {
        println!("written   {}", path.display());
    }
    println!(
        "\nNext: cd {} && cargo run -p {name}-server   (then the kubectl line it prints)",
        args.path.display()
    );
    Ok(())
}

/// `path` made absolute, so the new project finds Apiary from wherever it is.
fn absolute(path: &Path) -> Result<String, String> {
    let path = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.display().to_string())
}

/// Where the new project takes Apiary's crates from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Apiary {
    /// A checkout of this repository (written as given; absolute for a project anywhere).
    Path(String),
    /// A git URL (cargo finds each crate in the repository by name).
    Git(String),
}

impl Apiary {
    /// The inside of a dependency table for the crate in `dir` of Apiary (`runtime`).
    pub fn dependency(&self, dir: &str) -> String {
        match self {
            Apiary::Path(root) => format!("path = \"{}/{dir}\"", root.trim_end_matches('/')),
            Apiary::Git(url) => format!("git = \"{url}\""),
        }
    }
}

/// What the project serves.
#[derive(Clone, Debug)]
pub struct Scaffold {
    /// Project name (`gadget`): crates `gadget-api` and `gadget-server`.
    pub name: String,
    /// API group (`example.com`).
    pub group: String,
    /// API version (`v1alpha1`).
    pub version: String,
    /// Kind (`Gadget`).
    pub kind: String,
    /// Cluster-scoped (else namespaced).
    pub cluster: bool,
    /// Where Apiary's crates come from.
    pub apiary: Apiary,
}

impl Scaffold {
    /// The project name as a Rust identifier (`my-thing` → `my_thing`).
    pub fn crate_name(&self) -> String {
        self.name.replace('-', "_")
    }

    /// Why these names would not make a project that builds and serves, if they would not.
    /// (The derive checks version and kind again, with the same rules, at compile time.)
    pub fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let crate_like = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.ends_with('-');
        if !crate_like || name == "xtask" {
            return Err(format!(
                "project name {name:?}: use lowercase letters, digits and '-', starting with a letter (e.g. `gadget`)"
            ));
        }
        let labels_ok = self.group.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
        if !labels_ok || !self.group.contains('.') || self.group.len() > 253 {
            return Err(format!(
                "--group {:?}: use a DNS name with a dot that you own (e.g. `example.com`), as APIServices and CRDs require",
                self.group
            ));
        }
        if !is_api_version(&self.version) {
            return Err(format!(
                "--version {:?}: use a Kubernetes API version: v1, v1alpha1, v2beta3",
                self.version
            ));
        }
        let kind = &self.kind;
        if !kind.starts_with(|c: char| c.is_ascii_uppercase()) || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "--kind {kind:?}: use UpperCamelCase letters and digits (e.g. `Gadget`)"
            ));
        }
        Ok(())
    }
}

/// `v<N>`, `v<N>alpha<M>` or `v<N>beta<M>` with N, M positive and without leading zeros.
fn is_api_version(version: &str) -> bool {
    let number = |s: &str| !s.is_empty() && !s.starts_with('0') && s.chars().all(|c| c.is_ascii_digit());
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (major, stage) = rest.split_at(digits);
    number(major)
        && (stage.is_empty()
            || ["alpha", "beta"]
                .iter()
                .any(|s| stage.strip_prefix(s).is_some_and(number)))
}

macro_rules! templates {
    ($($ty:ident => $template:literal as $path:literal;)*) => {
        $(
            #[derive(Template)]
            #[template(path = $template, escape = "none")]
            struct $ty<'a> {
                s: &'a Scaffold,
            }
        )*

        /// The project's files, relative to its directory.
        pub fn render(s: &Scaffold) -> Result<Vec<File>, String> {
            s.check()?;
            let mut files = Vec::new();
            $(
                let mut text = $ty { s }.render().map_err(|e| format!("{}: {e}", $template))?;
                // askama drops the template's final newline.
                text.push('\n');
                files.push(File { path: PathBuf::from($path), bytes: text.into_bytes() });
            )*
            Ok(files)
        }
    };
}

templates! {
    Workspace => "new/workspace.toml" as "Cargo.toml";
    CargoConfig => "new/cargo_config.toml" as ".cargo/config.toml";
    GitIgnore => "new/gitignore" as ".gitignore";
    Readme => "new/readme.md" as "README.md";
    ApiCargo => "new/api_cargo.toml" as "api/Cargo.toml";
    ApiLib => "new/api_lib.rs" as "api/src/lib.rs";
    ServerCargo => "new/server_cargo.toml" as "server/Cargo.toml";
    ServerMain => "new/server_main.rs" as "server/src/main.rs";
    XtaskCargo => "new/xtask_cargo.toml" as "xtask/Cargo.toml";
    XtaskMain => "new/xtask_main.rs" as "xtask/src/main.rs";
}

/// Write the project into `dir`, which must not exist yet or be empty; the paths written.
pub fn write(dir: &Path, s: &Scaffold) -> Result<Vec<PathBuf>, String> {
    let files = render(s)?;
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!(
            "{} exists and is not empty: choose a new directory",
            dir.display()
        ));
    }
    let mut written = Vec::new();
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, &file.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gadget() -> Scaffold {
        Scaffold {
            name: "gadget".into(),
            group: "example.com".into(),
            version: "v1alpha1".into(),
            kind: "Gadget".into(),
            cluster: true,
            apiary: Apiary::Path("../apiary".into()),
        }
    }

    #[test]
    fn names_are_checked_before_anything_is_written() {
        let with = |f: fn(&mut Scaffold)| {
            let mut s = gadget();
            f(&mut s);
            s.check()
        };
        assert_eq!(with(|_| {}), Ok(()));
        for bad in [
            with(|s| s.name = "Gadget".into()),
            with(|s| s.name = "xtask".into()),
            with(|s| s.group = "example".into()),
            with(|s| s.group = "Example.com".into()),
            with(|s| s.version = "1alpha".into()),
            with(|s| s.version = "v1alpha".into()),
            with(|s| s.version = "v01".into()),
            with(|s| s.kind = "gadget".into()),
            with(|s| s.kind = "Gad-get".into()),
        ] {
            assert!(bad.is_err());
        }
        for good in ["v1", "v2beta3", "v10alpha12"] {
            assert!(is_api_version(good), "{good}");
        }
    }

    /// The getting-started guide shows what `new` writes, file by file: each
    /// `<!-- new: PATH -->` marker's code block is that file, and every `.rs`/`.toml` is shown.
    #[test]
    fn the_guide_shows_what_new_writes() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/getting-started.md")).unwrap();
        let mut shown = Vec::new();
        for part in readme.split("<!-- new: ").skip(1) {
            let (path, rest) = part.split_once(" -->").unwrap();
            let block = rest.split_once("```").and_then(|(_, b)| b.split_once('\n')).unwrap().1;
            let block = &block[..block.find("\n```").unwrap() + 1];
            shown.push((path.to_string(), block.to_string()));
        }
        for file in render(&gadget()).unwrap() {
            let path = file.path.to_str().unwrap();
            let text = String::from_utf8(file.bytes).unwrap();
            match shown.iter().find(|(p, _)| p == path) {
                Some((_, block)) => assert_eq!(
                    block, &text,
                    "docs/getting-started.md's block for {path} differs from what `new` writes"
                ),
                None => assert!(
                    !path.ends_with(".rs") && !path.ends_with(".toml"),
                    "docs/getting-started.md does not show {path}"
                ),
            }
        }
    }

    #[test]
    fn scope_and_sources_follow_the_arguments() {
        let files = render(&gadget()).unwrap();
        let text = |path: &str| {
            let file = files.iter().find(|f| f.path == Path::new(path)).unwrap();
            String::from_utf8(file.bytes.clone()).unwrap()
        };
        assert!(text("api/src/lib.rs").contains("    cluster,\n"));
        assert!(text("Cargo.toml").contains("apiary-runtime = { path = \"../apiary/runtime\" }"));
        let mut namespaced = gadget();
        namespaced.cluster = false;
        namespaced.apiary = Apiary::Git("https://example.com/apiary.git".into());
        let files = render(&namespaced).unwrap();
        let lib = files.iter().find(|f| f.path == Path::new("api/src/lib.rs")).unwrap();
        assert!(String::from_utf8_lossy(&lib.bytes).contains("    namespaced,\n"));
        let workspace = String::from_utf8(files[0].bytes.clone()).unwrap();
        assert!(workspace.contains("apiary-codegen = { git = \"https://example.com/apiary.git\" }"));
    }
}
