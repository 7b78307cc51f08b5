//! `medallion ui` in a test: the real binary serving a workspace, and Debian's headless
//! Chromium driven through chromedriver (WebDriver) with fantoccini.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// A running `medallion ui`, stopped when dropped.
pub struct UiServer {
    child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
}

impl UiServer {
    /// Starts `medallion ui --port 0 ARGS` in `dir` and waits for the address it prints.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> UiServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_medallion"))
            .current_dir(dir)
            .args(["ui", "--port", "0"])
            .args(args)
            .env_remove("MEDALLION_UI_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("medallion ui starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("medallion ui prints its address");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        UiServer { child, url }
    }

    /// GETs `path` of the API and returns the status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Client::new().get(format!("{}{path}", self.url)))
            .await
    }

    /// POSTs a SQL query to the API.
    pub async fn sql(&self, sql: &str) -> (u16, serde_json::Value) {
        self.send(
            reqwest::Client::new()
                .post(format!("{}/api/sql", self.url))
                .header("content-type", "application/json")
                .body(serde_json::json!({ "sql": sql }).to_string()),
        )
        .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let response = request.send().await.expect("the UI answers");
        let status = response.status().as_u16();
        let body = response.text().await.expect("a body");
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, json)
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the browser test saves its screenshots: `<target>/tmp/ui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Headless Chromium under chromedriver, both stopped when dropped.
pub struct Browser {
    driver: Child,
    pub client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or `None` outside CI when
    /// they are not installed (`.ci/run` installs them; in CI their absence fails).
    pub async fn start() -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromium-driver are missing: .ci/run installs them with apt-get"
            );
            eprintln!(
                "skipped: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile folder");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-quic", "--no-first-run",
                    "--window-size=1440,960",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("waiting for chromedriver: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        };
        Some(Browser {
            driver,
            client,
            _profile: profile,
        })
    }

    /// Waits up to 20 s for `css` to match, and returns the first match.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
    }

    /// Saves a screenshot of the page as `<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Ends the session; chromedriver stops when the browser is dropped.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// Stops chromedriver (and its Chromium) also when a test fails half-way.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A TCP port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
