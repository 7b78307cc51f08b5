//! A run of the real binary watched as it goes: it reports when each task starts and
//! ends (its `medallion::dag` debug lines on stderr), so that a test can kill it at an
//! instant of its work and tell afterwards whether the kill landed while work was under
//! way.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use super::Workspace;

/// A task starting or ending, as the run reported it.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    /// When the test read the line.
    pub at: Instant,
    pub task: String,
    pub started: bool,
}

/// The task events in `stderr` lines, e.g. "... DEBUG task `ingest` started".
fn parse_event(line: &str, at: Instant) -> Option<TaskEvent> {
    let (_, rest) = line.split_once("task `")?;
    let (task, rest) = rest.split_once('`')?;
    let started = if rest.starts_with(" started") {
        true
    } else if rest.starts_with(" ended") {
        false
    } else {
        return None;
    };
    Some(TaskEvent {
        at,
        task: task.to_string(),
        started,
    })
}

/// What a watched run wrote, filled in as it writes.
#[derive(Default)]
struct Seen {
    events: Vec<TaskEvent>,
    stderr: String,
}

/// A running `medallion run` whose task events are being read.
pub struct WatchedRun {
    child: tokio::process::Child,
    seen: Arc<Mutex<Seen>>,
    readers: Vec<JoinHandle<String>>,
}

/// How a watched run ended.
#[derive(Debug)]
pub struct Ended {
    pub status: ExitStatus,
    pub events: Vec<TaskEvent>,
    pub stdout: String,
    pub stderr: String,
}

impl Ended {
    /// Tasks that started and had not ended when the run stopped.
    pub fn running(&self) -> Vec<String> {
        let mut running: Vec<String> = Vec::new();
        for e in &self.events {
            if e.started {
                running.push(e.task.clone());
            } else {
                running.retain(|t| t != &e.task);
            }
        }
        running
    }

    /// Tasks that ended.
    pub fn ended(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| !e.started)
            .map(|e| e.task.clone())
            .collect()
    }

    /// Whether SIGKILL ended the run (rather than the run ending on its own).
    pub fn killed(&self) -> bool {
        self.status.signal() == Some(libc::SIGKILL)
    }

    /// Whether a kill landed while the job's work was under way: the process was still
    /// running, a task had started, and not every one of `tasks` had ended. Exact, since
    /// every line the run wrote before it died is read.
    pub fn killed_during_work(&self, tasks: &[String]) -> bool {
        let ended = self.ended();
        self.killed()
            && self.events.iter().any(|e| e.started)
            && !tasks.iter().all(|t| ended.contains(t))
    }

    /// How long each task took, in the order they started.
    pub fn durations(&self) -> Vec<(String, Duration)> {
        self.events
            .iter()
            .filter(|e| e.started)
            .map(|s| {
                let took = duration_of(&self.events, &s.task)
                    .unwrap_or_else(|| panic!("task {} did not end", s.task));
                (s.task.clone(), took)
            })
            .collect()
    }
}

/// How long `task` took, from its start to its end, if it ended among `events`.
pub fn duration_of(events: &[TaskEvent], task: &str) -> Option<Duration> {
    let at = |started: bool| {
        events
            .iter()
            .find(|e| e.started == started && e.task == task)
            .map(|e| e.at)
    };
    Some(at(false)? - at(true)?)
}

/// Reads `pipe` line by line until it closes, handing each line to `each`; returns all.
fn read_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    mut each: impl FnMut(&str) + Send + 'static,
) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut all = String::new();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line);
            each(&text);
            all.push_str(&text);
            line.clear();
        }
        all
    })
}

impl Workspace {
    /// Starts `medallion run` here with the task events logged, and watches it.
    pub fn spawn_watched(&self, env: &[(&str, &str)]) -> WatchedRun {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"));
        cmd.current_dir(self.root()).arg("run");
        for (n, v) in &self.vars {
            cmd.arg("--var").arg(format!("{n}={v}"));
        }
        let dag = medallion::job::DAG_LOG;
        let mut child = cmd
            .env(
                "MEDALLION_LOG",
                format!("warn,medallion=info,deltalake_core=error,{dag}=debug"),
            )
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("medallion starts");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stderr = {
            let seen = seen.clone();
            read_lines(child.stderr.take().unwrap(), move |line| {
                let mut seen = seen.lock().unwrap();
                if let Some(e) = parse_event(line, Instant::now()) {
                    seen.events.push(e);
                }
                seen.stderr.push_str(line);
            })
        };
        let stdout = read_lines(child.stdout.take().unwrap(), |_| {});
        WatchedRun {
            child,
            seen,
            readers: vec![stdout, stderr],
        }
    }
}

impl WatchedRun {
    /// The task events so far.
    pub fn events(&self) -> Vec<TaskEvent> {
        self.seen.lock().unwrap().events.clone()
    }

    /// Waits until `task` starts, and returns when it did. Panics if the run ends first,
    /// or the task does not start within two minutes.
    pub async fn started(&mut self, task: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        let start = |seen: &Seen| {
            seen.events
                .iter()
                .find(|e| e.started && e.task == task)
                .map(|e| e.at)
        };
        loop {
            if let Some(at) = start(&self.seen.lock().unwrap()) {
                return at;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let seen = self.seen.lock().unwrap();
                if let Some(at) = start(&seen) {
                    return at;
                }
                panic!(
                    "the run ended ({status}) before task {task} started:\n{}",
                    seen.stderr
                );
            }
            assert!(
                Instant::now() < deadline,
                "task {task} did not start within two minutes"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sends SIGKILL at `at` (at once if it has passed), then waits for the end.
    pub async fn kill_at(mut self, at: Instant) -> Ended {
        tokio::time::sleep_until(at.into()).await;
        // Harmless if the run has already exited: its status then says so.
        let _ = self.child.start_kill();
        self.wait().await
    }

    /// Waits for the run to end, and for everything it wrote.
    pub async fn wait(mut self) -> Ended {
        let status = tokio::time::timeout(Duration::from_secs(300), self.child.wait())
            .await
            .expect("medallion run finished within 5 minutes")
            .unwrap();
        let mut texts = Vec::new();
        for reader in self.readers {
            texts.push(reader.await.unwrap());
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        Ended {
            status,
            events: seen.events,
            stdout: texts.swap_remove(0),
            stderr: seen.stderr,
        }
    }
}
