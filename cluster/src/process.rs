//! The cluster's processes: each with a log file, in a process group of its own (a Ctrl-C in
//! the terminal that started a detached cluster does not reach it), stopped by its own PID.
//! A detached process is recorded with its start time, so `down` never signals a later process
//! that reuses the PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::Error;

/// How long a process has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a process's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// A running component; stopped on drop unless detached.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Process {
    /// Start `command` as `name`, its output appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Process, Error> {
        use std::os::unix::process::CommandExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(log))?;
        let err = file.try_clone().map_err(Error::io(log))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Start {
                what: name.into(),
                detail: format!("{:?}: {e}", command.get_program()),
                log_path: log.into(),
                log: String::new(),
            })?;
        Ok(Process {
            name: name.into(),
            pid: child.id(),
            child: Some(child),
            log: log.into(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// An [`Error::Start`] for this process, quoting the end of its log.
    pub fn start_error(&self, detail: impl Into<String>) -> Error {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        Error::Start {
            what: self.name.clone(),
            detail: detail.into(),
            log_path: self.log.clone(),
            log: lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"),
        }
    }

    /// Fail with the log if the process has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.exited() {
            Some(status) => Err(self.start_error(format!("exited ({status})"))),
            None => Ok(()),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s; waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(self.pid, Signal::TERM);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, as a crash would; waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leave the process running after this handle is gone, recorded in `pids` (one line:
    /// name, PID, start time) for [`stop_recorded`].
    pub fn detach(mut self, pids: &Path) -> Result<(), Error> {
        use std::io::Write;
        let started = start_time(self.pid).unwrap_or_default();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(pids)
            .map_err(Error::io(pids))?;
        writeln!(file, "{} {} {started}", self.name, self.pid).map_err(Error::io(pids))?;
        self.child = None;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|pid| kill_process(pid, signal).is_ok())
}

/// A live process's start time in clock ticks since boot (`/proc/PID/stat`, field 22), which
/// tells it apart from a later process with the same PID; None once it has exited (a zombie
/// included).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Stop every process recorded in `pids` that is still the one recorded (newest first: the
/// servers before the control plane they need), SIGTERM then SIGKILL after 10 s, and remove
/// the file. Returns the names of those stopped.
pub fn stop_recorded(pids: &Path) -> Result<Vec<String>, Error> {
    let text = match std::fs::read_to_string(pids) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: pids.into(),
                source: e,
            });
        }
    };
    let mut stopped = Vec::new();
    for line in text.lines().rev() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(pid), Some(started)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(pid), Ok(started)) = (pid.parse::<u32>(), started.parse::<u64>()) else {
            continue;
        };
        if start_time(pid) != Some(started) || !signal(pid, Signal::TERM) {
            continue;
        }
        let deadline = Instant::now() + STOP_GRACE;
        while start_time(pid) == Some(started) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if start_time(pid) == Some(started) {
            signal(pid, Signal::KILL);
        }
        stopped.push(name.to_string());
    }
    std::fs::remove_file(pids).map_err(Error::io(pids))?;
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_process_is_stopped_and_a_reused_pid_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        let process = Process::spawn("sleeper", sleep, &dir.path().join("log")).unwrap();
        let pid = process.pid();
        process.detach(&pids).unwrap();
        // A record of the same PID with another start time is some other process: untouched.
        let mut other = Command::new("sleep");
        other.arg("600");
        let mut survivor = Process::spawn("other", other, &dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("forged"), format!("other {} 1\n", survivor.pid())).unwrap();
        assert_eq!(stop_recorded(&dir.path().join("forged")).unwrap(), Vec::<String>::new());
        assert!(
            survivor.exited().is_none(),
            "a PID whose start time differs is not signalled"
        );

        assert_eq!(stop_recorded(&pids).unwrap(), vec!["sleeper".to_string()]);
        assert_eq!(start_time(pid), None, "the recorded process has exited");
        assert!(!pids.exists());
    }
}
