//! The documentation against the code: the flag reference (`docs/reference/flags.md`) is
//! rendered from `ServerOptions`' own clap definition and must equal the committed file
//! (`APIARY_BLESS=1 cargo test -p apiary-runtime --test docs` rewrites it), and every relative
//! link in the Markdown files reaches a file, and a heading where it names one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use apiary_runtime::server::ServerOptions;
use clap::Args;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One table cell: no line breaks, and `|` escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The flag reference, from the clap definition every server's command line flattens in.
fn flags_reference() -> String {
    let mut command = ServerOptions::augment_args(clap::Command::new("server"));
    // Settles what the derive left implicit (how many values each flag takes).
    command.build();
    let mut out = String::from(
        "# Server flags\n\n\
         Every flag of `ServerOptions`, which every Apiary server's command line includes (a\n\
         server adds its own: the Widget server's `--status-controller`). Generated from the clap\n\
         definition by `runtime/tests/docs.rs`, which fails when this page differs from it\n\
         (`APIARY_BLESS=1 cargo test -p apiary-runtime --test docs` rewrites it). Bounds that are\n\
         not flags are listed in [the server guide](../server.md#limits).\n\n\
         | flag | default | environment | what it does |\n|---|---|---|---|\n",
    );
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values());
        let value = if takes_value {
            let name = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
            format!(" <{name}>")
        } else {
            String::new()
        };
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match defaults.join(",") {
            d if d.is_empty() => "—".to_string(),
            d => format!("`{d}`"),
        };
        let env = arg
            .get_env()
            .map_or_else(|| "—".to_string(), |e| format!("`{}`", e.to_string_lossy()));
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let choices: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !help.is_empty() && !help.ends_with('.') {
            help.push('.');
        }
        if !choices.is_empty() && takes_value {
            help.push_str(&format!(" One of {}.", choices.join(", ")));
        }
        out.push_str(&format!(
            "| `--{long}{value}` | {default} | {env} | {} |\n",
            cell(&help)
        ));
    }
    out
}

#[test]
fn the_flag_reference_is_current() {
    let path = root().join("docs/reference/flags.md");
    let rendered = flags_reference();
    if std::env::var_os("APIARY_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} differs from the flags' definition: run `APIARY_BLESS=1 cargo test -p apiary-runtime --test docs`",
        path.display()
    );
}

/// The GitHub anchor of a heading: lowercase, punctuation but `-` and `_` dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

/// The targets of inline links `](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        // Code spans hold examples, not links.
        let outside_code: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = outside_code.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    found
}

/// The Markdown files of the documentation: the root's and everything under `docs/`.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root().join("docs")];
    for entry in std::fs::read_dir(root()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn every_relative_link_reaches_its_file_and_heading() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (target, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target_path = if target.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(target)
            };
            if !target_path.exists() {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            }
            let is_markdown = target_path.extension().is_some_and(|e| e == "md");
            if !fragment.is_empty() && is_markdown {
                let headings = anchors(&std::fs::read_to_string(&target_path).unwrap());
                if !headings.contains(fragment) {
                    broken.push(format!("{}: {link} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
