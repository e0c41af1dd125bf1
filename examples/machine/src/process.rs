//! Processes, computed from `/proc` on every read: a read-only, cluster-scoped resource like
//! metrics-server's, with nothing stored.

use apiary::custom::CustomStorage;
use apiary::prelude::*;
use apiary::status::{ApiError, ApiResult};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux's architectures).
const TICKS_PER_SECOND: i64 = 100;
/// Longest command line reported.
const MAX_COMMAND: usize = 256;
/// The label that carries the process's short name, for label selectors.
pub const COMM_LABEL: &str = "machine.example.com/comm";

/// A process on this machine; its name is its PID.
#[derive(ApiResource, Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[api(
    crate = "apiary",
    group = "machine.example.com",
    version = "v1",
    kind = "Process",
    cluster,
    short_names("proc"),
    printcolumn(name = "Command", type = "string", json_path = ".spec.command"),
    printcolumn(name = "State", type = "string", json_path = ".status.state"),
    printcolumn(name = "RSS", type = "integer", json_path = ".status.residentBytes"),
    printcolumn(name = "Parent", type = "integer", json_path = ".spec.parent", priority = 1),
    printcolumn(name = "Threads", type = "integer", json_path = ".status.threads", priority = 1)
)]
pub struct Process {
    /// Standard object metadata: the PID as name, the start time as creationTimestamp.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What was started.
    pub spec: ProcessSpec,
    /// What it is doing now.
    #[serde(default)]
    pub status: ProcessStatus,
}

/// What a process runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessSpec {
    /// The command line (`[name]` for kernel threads), cut at 256 characters.
    pub command: String,
    /// The parent's PID.
    pub parent: i64,
}

/// A process's current state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    /// One letter, as in `ps`: R running, S sleeping, D disk wait, Z zombie, ...
    pub state: String,
    /// Threads in the process.
    pub threads: i64,
    /// Resident memory in bytes.
    pub resident_bytes: i64,
}

/// Reads processes from `/proc`.
pub struct Proc;

#[async_trait]
impl CustomStorage<Process> for Proc {
    const VERBS: &'static [&'static str] = &["get", "list", "watch"];

    async fn get(&self, _: Option<&str>, name: &str) -> ApiResult<Process> {
        let missing = || ApiError::not_found(&Process::META, name);
        let pid: u32 = name.parse().map_err(|_| missing())?;
        read(pid, boot_time()).ok_or_else(missing)
    }

    async fn list(&self, _: Option<&str>) -> ApiResult<Vec<Process>> {
        let boot = boot_time();
        let entries = std::fs::read_dir("/proc").map_err(ApiError::internal)?;
        // A process may end between the directory read and its own files: skip it.
        Ok(entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| read(pid, boot))
            .collect())
    }

    fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
}

/// Seconds since the epoch at boot, from `/proc/stat`.
fn boot_time() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok()))
        .unwrap_or(0)
}

fn read(pid: u32, boot: i64) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may itself hold spaces and parentheses.
    let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let started = boot + field(22)?.parse::<i64>().ok()? / TICKS_PER_SECOND;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut command = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if command.is_empty() {
        command = format!("[{comm}]");
    }
    if let Some((cut, _)) = command.char_indices().nth(MAX_COMMAND) {
        command.truncate(cut);
    }
    let resident_kib: i64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0);
    let mut process = Process {
        spec: ProcessSpec {
            command,
            parent: field(4)?.parse().ok()?,
        },
        status: ProcessStatus {
            state: field(3)?.to_string(),
            threads: field(20)?.parse().ok()?,
            resident_bytes: resident_kib * 1024,
        },
        ..Default::default()
    };
    process.metadata.name = Some(pid.to_string());
    process.metadata.creation_timestamp = jiff::Timestamp::from_second(started).ok().map(Time);
    process.metadata.labels = Some([(COMM_LABEL.to_string(), label_value(comm))].into());
    Some(process)
}

/// `comm` as a valid label value: alphanumerics, `-`, `_` and `.`, at most 63, alphanumeric ends.
fn label_value(comm: &str) -> String {
    let cleaned: String = comm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("kworker/0:1-events"), "kworker-0-1-events");
        assert_eq!(label_value("(sd-pam)"), "sd-pam");
        assert_eq!(label_value("sleep"), "sleep");
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id(), boot_time()).expect("this process is in /proc");
        assert_eq!(
            me.metadata.name.as_deref(),
            Some(std::process::id().to_string().as_str())
        );
        assert!(me.status.threads >= 1 && me.status.resident_bytes > 0, "{me:?}");
        let started = me.metadata.creation_timestamp.unwrap().0;
        let age = jiff::Timestamp::now().as_second() - started.as_second();
        assert!((0..600).contains(&age), "started {age} s ago");
    }
}
