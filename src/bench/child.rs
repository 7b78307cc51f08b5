//! One `medallion run` as a child process: its wall time, its peak memory and its JSON
//! run report.
//!
//! The peak memory is the one the run reports (`VmHWM`, its own pages). The kernel's
//! `ru_maxrss` from `wait4` is only the fallback: Linux carries the parent's resident
//! size at fork into it, so a bench that had hosted the memory broker saw its own size
//! as the peak of every later run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::job::RunReport;

use super::BenchError;

/// How a child run ended.
#[derive(Debug)]
pub struct ChildRun {
    pub wall: Duration,
    /// Peak resident set of the process, in bytes.
    pub peak_rss: u64,
    pub report: Option<RunReport>,
}

/// A `medallion run` of one workspace: its bundle variables and its log file.
#[derive(Debug, Clone)]
pub struct RunCommand {
    pub bundle: PathBuf,
    pub target: Option<String>,
    pub vars: Vec<(String, String)>,
    pub log: PathBuf,
    pub report: PathBuf,
}

impl RunCommand {
    fn command(&self, extra: &[&str]) -> Result<Command, BenchError> {
        let exe = std::env::current_exe().map_err(|source| BenchError::Io {
            path: "the medallion executable".into(),
            source,
        })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| BenchError::Io {
                path: self.log.clone(),
                source,
            })?;
        let err = log.try_clone().map_err(|source| BenchError::Io {
            path: self.log.clone(),
            source,
        })?;
        let mut cmd = Command::new(exe);
        cmd.env("MEDALLION_BUNDLE", &self.bundle)
            .env("MEDALLION_LOG", "warn")
            .args(extra)
            .arg("--report-json")
            .arg(&self.report)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        if let Some(t) = &self.target {
            cmd.arg("--target").arg(t);
        }
        for (name, value) in &self.vars {
            cmd.arg("--var").arg(format!("{name}={value}"));
        }
        Ok(cmd)
    }

    /// Runs the job once (available now), or only `task` of it, and waits for it.
    pub async fn run(&self, task: Option<&str>) -> Result<ChildRun, BenchError> {
        let mut args = vec!["run"];
        args.extend(task.map_or(vec![], |t| vec!["--task", t]));
        self.spawn_and_wait(&args).await
    }

    async fn spawn_and_wait(&self, args: &[&str]) -> Result<ChildRun, BenchError> {
        let _ = std::fs::remove_file(&self.report);
        let child = self
            .command(args)?
            .spawn()
            .map_err(|source| BenchError::Io {
                path: "medallion run".into(),
                source,
            })?;
        let started = Instant::now();
        let (code, max_rss) = wait(child).await?;
        let wall = started.elapsed();
        if code != Some(0) {
            return Err(BenchError::RunFailed {
                log: self.log.clone(),
            });
        }
        let report = read_report(&self.report);
        Ok(ChildRun {
            wall,
            peak_rss: report
                .as_ref()
                .and_then(|r| r.peak_rss_bytes)
                .unwrap_or(max_rss),
            report,
        })
    }

    /// Starts the job in `--continuous` mode; [`Continuous::stop`] ends it.
    pub fn start_continuous(&self, interval: Duration) -> Result<Continuous, BenchError> {
        let interval = format!("{}ms", interval.as_millis());
        let child = self
            .command(&["run", "--continuous", "--interval", &interval])?
            .spawn()
            .map_err(|source| BenchError::Io {
                path: "medallion run --continuous".into(),
                source,
            })?;
        Ok(Continuous { child: Some(child) })
    }
}

/// A running `medallion run --continuous`.
pub struct Continuous {
    child: Option<Child>,
}

impl Continuous {
    /// Interrupts it (SIGINT, as Ctrl-C) and waits for the run under way to finish.
    pub async fn stop(mut self) -> Result<u64, BenchError> {
        let child = self.child.take().expect("stopped once");
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        Ok(wait(child).await?.1)
    }
}

impl Drop for Continuous {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` with wait4(2): its exit code and its own peak RSS in bytes.
async fn wait(child: Child) -> Result<(Option<i32>, u64), BenchError> {
    let pid = child.id() as libc::pid_t;
    // `Child` would reap the process on wait(); wait4 reaps it here instead, so the
    // handle is only forgotten (dropping a `Child` neither kills nor waits).
    std::mem::forget(child);
    tokio::task::spawn_blocking(move || {
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r < 0 {
            return Err(BenchError::Io {
                path: format!("child process {pid}").into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        // Linux reports ru_maxrss in kilobytes.
        Ok((code, usage.ru_maxrss.max(0) as u64 * 1024))
    })
    .await
    .expect("the wait does not panic")
}

fn read_report(path: &Path) -> Option<RunReport> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}
