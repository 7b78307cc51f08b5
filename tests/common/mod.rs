//! Shared helpers of the integration tests: a workspace with its own bundle, landing
//! folder and warehouse, a real broker, and ways to look at what landed in Kafka and Delta.
#![allow(dead_code)]

pub mod pipelines;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::display::array_value_to_string;
use deltalake::datafusion::prelude::SessionContext;
use medallion::broker::{BrokerStorage, EmbeddedBroker};
use medallion::bundle::{Bundle, Override, Settings};
use medallion::catalog::TableName;
use medallion::generate::generate;
pub use medallion::generate::GenerateOptions;
use medallion::job::{self, RunOptions, RunReport};
use medallion::kafka::{KafkaEndpoint, RangeReader};
use rdkafka::message::Headers;
use rdkafka::Message;

/// The repository's own bundle file: tests run the pipeline exactly as users do.
pub fn repo_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("medallion.yml")
}

/// A throwaway project: the repository's bundle, an empty landing folder, a warehouse and
/// a state folder, all under one temporary folder.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// Extra `--var` overrides, such as the broker address.
    pub vars: Vec<(String, String)>,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(repo_bundle(), dir.path().join("medallion.yml")).expect("copy bundle");
        // The job and pipeline definitions, and the stock pipeline's SQL.
        for folder in ["resources", "transformations"] {
            let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
            std::fs::create_dir_all(dir.path().join(folder)).expect("folder");
            for entry in std::fs::read_dir(from).expect(folder) {
                let path = entry.expect("entry").path();
                std::fs::copy(
                    &path,
                    dir.path().join(folder).join(path.file_name().unwrap()),
                )
                .expect("copy");
            }
        }
        std::fs::create_dir_all(dir.path().join("data/landing")).expect("landing dir");
        Workspace {
            dir,
            vars: Vec::new(),
        }
    }

    /// A workspace whose runs use `broker` instead of starting the embedded one.
    pub fn with_broker(broker: &TestBroker) -> Self {
        let mut w = Self::new();
        w.set_var("kafka_bootstrap_servers", &broker.bootstrap());
        w
    }

    pub fn set_var(&mut self, name: &str, value: &str) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.into(), value.into()));
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn landing(&self) -> PathBuf {
        self.root().join("data/landing")
    }

    pub fn bundle_file(&self) -> PathBuf {
        self.root().join("medallion.yml")
    }

    /// Sets the bundle's `kafka:` map (librdkafka settings) to `settings`, one
    /// `key: value` per entry.
    pub fn set_kafka_settings(&self, settings: &[(&str, &str)]) {
        let bundle = self.bundle_file();
        let text = std::fs::read_to_string(&bundle).unwrap();
        let map: String = settings
            .iter()
            .map(|(k, v)| format!("\n  {k}: {v}"))
            .collect();
        assert!(
            text.contains("kafka: {}\n"),
            "the bundle has an empty kafka map"
        );
        std::fs::write(
            &bundle,
            text.replace("kafka: {}\n", &format!("kafka:{map}\n")),
        )
        .unwrap();
    }

    pub fn settings(&self) -> Settings {
        let bundle = Bundle::load(&self.bundle_file()).expect("bundle loads");
        let overrides: Vec<Override> = self
            .vars
            .iter()
            .map(|(n, v)| Override::parse_cli(&format!("{n}={v}")).expect("override"))
            .collect();
        bundle.resolve(None, &overrides).expect("bundle resolves")
    }

    /// Generates landing files with the generator (BOM, CRLF, nulls) and returns them.
    pub fn generate(&self, options: GenerateOptions) -> Vec<PathBuf> {
        generate(&self.landing(), &options).expect("generate")
    }

    /// Writes a landing file with the given text.
    pub fn land(&self, name: &str, text: &[u8]) -> PathBuf {
        let path = self.landing().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs the job in this process and expects every task to succeed.
    pub async fn run(&self) -> RunReport {
        let report = self.try_run().await;
        if let Some(failed) = report.failure() {
            panic!("task {} failed: {:?}", failed.task, failed.notes);
        }
        report
    }

    pub async fn try_run(&self) -> RunReport {
        job::run(&self.settings(), &RunOptions::default())
            .await
            .expect("run starts")
    }

    /// Runs the real `medallion` binary here, with extra environment variables.
    pub async fn run_binary(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medallion"));
        cmd.current_dir(self.root()).arg("run").args(args);
        for (n, v) in &self.vars {
            cmd.arg("--var").arg(format!("{n}={v}"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.kill_on_drop(true).output();
        // A guard against a hung run, not a speed test: the 20,000-index run takes about
        // five minutes in a debug build on two busy cores.
        tokio::time::timeout(Duration::from_secs(900), child)
            .await
            .expect("medallion run finished within 15 minutes")
            .expect("medallion runs")
    }

    /// Runs the binary and expects success; returns what it printed on stdout.
    pub async fn run_binary_ok(&self, args: &[&str]) -> String {
        let out = self.run_binary(args, &[]).await;
        assert!(
            out.status.success(),
            "medallion run {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `medallion ARGS` here and waits, with extra environment variables.
    pub fn medallion(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        medallion_in(self.root(), args, env)
    }

    /// Runs `medallion ARGS` here, expects success, and returns what it printed.
    pub fn medallion_ok(&self, args: &[&str]) -> String {
        let out = self.medallion(args, &[]);
        assert!(
            out.status.success(),
            "medallion {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Rows of a table in this workspace's catalog, by SQL over DataFusion.
    /// Asserts that bronze holds exactly `records`, each once, in partition and offset
    /// order.
    pub async fn assert_bronze_holds(&self, records: &[Record], what: &str) {
        let rows = self
            .query(
                &bronze(),
                "SELECT partition, \"offset\", value FROM t ORDER BY partition, \"offset\"",
            )
            .await;
        let kafka_rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                vec![
                    r.partition.to_string(),
                    r.offset.to_string(),
                    r.value.clone(),
                ]
            })
            .collect();
        assert_eq!(rows, kafka_rows, "{what}");
    }

    pub async fn query(&self, name: &TableName, sql: &str) -> Vec<Vec<String>> {
        let settings = self.settings();
        query_table(&settings.warehouse.path(name), sql).await
    }

    pub async fn count(&self, name: &TableName) -> u64 {
        let rows = self.query(name, "SELECT count(*) FROM t").await;
        rows[0][0].parse().unwrap()
    }

    /// Data lines in `quarantine.ingest` (a whole rejected file counts all its lines), or
    /// 0 before anything was quarantined.
    pub async fn ingest_quarantined_lines(&self) -> u64 {
        let name = ingest_quarantine();
        if !self.settings().warehouse.path(&name).exists() {
            return 0;
        }
        let rows = self
            .query(&name, "SELECT coalesce(sum(lines), 0) FROM t")
            .await;
        rows[0][0].parse().unwrap()
    }
}

/// Runs `medallion ARGS` in `dir` and waits, with extra environment variables.
pub fn medallion_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_medallion"))
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("medallion runs")
}

/// Runs `sql` against the Delta table at `path`, registered as `t`; every value as text.
pub async fn query_table(path: &Path, sql: &str) -> Vec<Vec<String>> {
    let url =
        url::Url::from_directory_path(std::fs::canonicalize(path).expect("table exists")).unwrap();
    let table = deltalake::open_table(url)
        .await
        .expect("opens as a Delta table");
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let batches: Vec<RecordBatch> = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(r) {
                            "NULL".to_string()
                        } else {
                            array_value_to_string(c, r).unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// A Kafka message as the tests look at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: BTreeMap<String, String>,
}

/// A client for `bootstrap` and the low and high watermark of each partition of `topic`.
async fn watermarks(bootstrap: &str, topic: &str) -> (KafkaEndpoint, BTreeMap<i32, (i64, i64)>) {
    let e = KafkaEndpoint::new(bootstrap, BTreeMap::new());
    let partitions = e
        .partitions_async(topic)
        .await
        .unwrap()
        .expect("topic exists");
    let w = e.watermarks_async(topic, &partitions).await.unwrap();
    (e, w)
}

/// The distinct (source_file, source_line) of the records: each data line they carry.
pub fn source_lines(records: &[Record]) -> std::collections::BTreeSet<(String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.headers["source_file"].clone(),
                r.headers["source_line"].clone(),
            )
        })
        .collect()
}

/// The number of records in every partition of `topic` (high minus low watermark).
pub async fn topic_count(bootstrap: &str, topic: &str) -> u64 {
    let (_, w) = watermarks(bootstrap, topic).await;
    w.values().map(|(lo, hi)| (hi - lo) as u64).sum()
}

/// Every record of `topic`, in partition and offset order.
pub async fn topic_records(bootstrap: &str, topic: &str) -> Vec<Record> {
    let (e, w) = watermarks(bootstrap, topic).await;
    let mut reader = RangeReader::open(&e, "test", topic, &w, Duration::from_secs(30)).unwrap();
    let mut out = Vec::new();
    while let Some(m) = reader.next().await.unwrap() {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            headers,
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// A broker of one test's own: the embedded tansu broker with sqlite storage in a
/// temporary folder. (tansu 0.6.0's memory engine loses records under librdkafka's
/// pipelined idempotent produce, so the tests use the engine medallion ships with.)
pub struct TestBroker {
    pub broker: EmbeddedBroker,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = EmbeddedBroker::start(BrokerStorage::Sqlite(dir.path().join("tansu.db")))
            .await
            .expect("embedded broker starts");
        TestBroker { broker, _dir: dir }
    }

    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// Stops the broker and keeps its data, for [`TestBroker::start_in`].
    pub async fn stop(self) -> tempfile::TempDir {
        self.broker.stop().await;
        self._dir
    }

    /// A broker that requires SASL: the [`SCRAM_USERS`] are its users, their credentials
    /// written through tansu's storage API before it starts.
    pub async fn start_scram() -> Self {
        use tansu_storage::Storage as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = BrokerStorage::Sqlite(dir.path().join("tansu.db"));
        let users = tansu_storage::StorageContainer::builder()
            .cluster_id("medallion")
            .node_id(111)
            .advertised_listener(url::Url::parse("tcp://127.0.0.1:9092").unwrap())
            .storage(storage.url().unwrap())
            .silent(true)
            .build()
            .await
            .expect("tansu storage opens");
        // Credentials belong to a cluster, which exists once a broker registered in it.
        users
            .register_broker(tansu_storage::BrokerRegistrationRequest {
                broker_id: 111,
                cluster_id: "medallion".into(),
                incarnation_id: uuid::Uuid::now_v7(),
                rack: None,
            })
            .await
            .expect("cluster registered");
        for (mechanism, user, password) in SCRAM_USERS {
            let mechanism = mechanism.parse().unwrap();
            users
                .upsert_user_scram_credential(
                    user,
                    mechanism,
                    scram_credential(mechanism, password),
                )
                .await
                .expect("SCRAM user stored");
            assert!(users
                .user_scram_credential(user, mechanism)
                .await
                .unwrap()
                .is_some());
        }
        drop(users);
        // The storage's connection pool closes in the background; then sqlite is free.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let broker = EmbeddedBroker::start_authenticated(storage)
            .await
            .expect("embedded broker starts with authentication");
        TestBroker { broker, _dir: dir }
    }

    /// The embedded broker of a workspace whose runs start their own (the default), on
    /// the storage they left under its `state_dir`: to look at the topic between runs.
    pub async fn of_state_dir(w: &Workspace) -> EmbeddedBroker {
        EmbeddedBroker::start(BrokerStorage::in_state_dir(&w.settings().state_dir))
            .await
            .expect("the workspace's embedded broker starts")
    }

    /// Starts a broker on the data of a stopped one (on another port).
    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        let broker = EmbeddedBroker::start(BrokerStorage::Sqlite(dir.path().join("tansu.db")))
            .await
            .expect("embedded broker restarts");
        TestBroker { broker, _dir: dir }
    }
}

/// Data lines of a CSV text (everything after the header), split the simple way: the
/// generator writes no quoted fields.
pub fn data_lines(path: &Path) -> Vec<String> {
    let text = String::from_utf8(std::fs::read(path).unwrap()).unwrap();
    text.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn bronze() -> TableName {
    TableName::new("bronze", "bronze")
}

pub fn ingest_quarantine() -> TableName {
    TableName::new("quarantine", "ingest")
}

/// Small generated input: `rows` rows over `files` files, BOM, CRLF and null days.
pub fn small(rows: u64, files: u32, seed: u64) -> GenerateOptions {
    GenerateOptions {
        rows,
        indices: 5,
        files,
        seed,
        ..GenerateOptions::default()
    }
}

/// A landing file's bytes: BOM, the standard header, then `rows`, CRLF line ends.
pub fn csv(rows: &[&str]) -> Vec<u8> {
    let mut text = format!("\u{feff}{}\r\n", medallion::generate::HEADER);
    for r in rows {
        text.push_str(r);
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// First run: a duplicate, a null row, a non-numeric close.
pub const RUN_1: &[&str] = &[
    "NYA,2024-01-02,9.5,10.5,9,10,10,100",
    "NYA,2024-01-03,10,11.5,10,11,11,100",
    "NYA,2024-01-03,10,11.5,10,11,11,100",
    "NYA,2024-01-05,11,12.5,11,12,12,100",
    "HSI,2024-01-02,99,101,98,100,100,7.0",
    "HSI,2024-01-03,null,null,null,null,null,null",
    "HSI,2024-01-04,99,101,98,abc,100,7",
];

/// Second run: a late (older) record, a correction of 2024-01-03, a key already in
/// stocks_silver, and a new day for HSI.
pub const RUN_2: &[&str] = &[
    "NYA,2024-01-04,11,11.9,11,11.5,11.5,100",
    "NYA,2024-01-03,10,11.5,10,11.2,11.2,100",
    "HSI,2024-01-08,100,106,99,105,105,8",
    "NYA,2024-01-02,9.5,10.5,9,10,10,100",
];

/// Every Silver, Gold and quarantine table of a workspace as text rows, sorted, without
/// the processing-time columns: what must come out the same however the runs went.
pub async fn refined_tables(w: &Workspace) -> Vec<(String, Vec<Vec<String>>)> {
    let queries = [
        ("silver", "stocks_silver", "SELECT * FROM t ORDER BY \"Index\", \"Date\""),
        ("quarantine", "stocks_silver", "SELECT flow, source, raw, reason, expectations FROM t ORDER BY raw"),
        ("silver", "close_price_silver", "SELECT \"Index\", \"Date\", \"Close\", \"Adj_Close\", \"__START_AT\", \"__END_AT\", current, end_date IS NULL FROM t ORDER BY \"Index\", \"Date\", effective_date"),
        ("silver", "current_close_silver", "SELECT * FROM t ORDER BY \"Index\""),
        ("silver", "stocks_close_silver", "SELECT * FROM t ORDER BY \"Index\", \"Date\""),
        ("gold", "updated_stocks_gold", "SELECT * FROM t ORDER BY \"Index\", \"Date\""),
    ];
    let mut out = Vec::new();
    for (schema, table, sql) in queries {
        let name = TableName::new(schema, table);
        out.push((name.to_string(), w.query(&name, sql).await));
    }
    out
}

/// Bronze and `<catalog>.quarantine.ingest` of a workspace as text rows, sorted: what
/// ingest and bronze must leave the same however the runs went. Bronze is compared on
/// content, as the multiset of (key, value), since offsets and timestamps may differ
/// between runs; quarantine.ingest on the columns named here, so that a column added
/// later does not change the comparison.
pub async fn ingested_tables(w: &Workspace) -> Vec<(String, Vec<Vec<String>>)> {
    vec![
        (
            bronze().to_string(),
            w.query(&bronze(), "SELECT key, value FROM t ORDER BY key, value")
                .await,
        ),
        (
            ingest_quarantine().to_string(),
            w.query(
                &ingest_quarantine(),
                "SELECT file, line, raw, reason, lines FROM t ORDER BY file, line",
            )
            .await,
        ),
    ]
}

/// A program of the Python venv that `.ci/run` makes (next to `$MEDALLION_PYTHON`, or in
/// `.venv/bin`). Without it a test is skipped locally and fails in CI.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let dir = std::env::var("MEDALLION_PYTHON")
        .ok()
        .and_then(|p| Path::new(&p).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin"));
    let tool = dir.join(name);
    if tool.exists() {
        return Some(tool);
    }
    skip_outside_ci(
        &format!("{} is missing", tool.display()),
        "run .ci/run, which makes the venv",
    );
    None
}

/// For a test that CI must run but that needs something missing here (`what`): fails
/// under CI (`CI` is set, as `.ci/run` and GitHub Actions do), and otherwise prints a
/// note saying how to get it (`fix`), for the test to return.
pub fn skip_outside_ci(what: &str, fix: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run this test, but {what}; {fix}"
    );
    eprintln!("skipped: {what} ({fix})");
}

/// Runs the test `name` of this test binary again, alone, in a child process with the
/// Apache Kafka jars missing (`MEDALLION_KAFKA_JARS` an empty folder), and checks that it
/// fails under CI and is skipped, with a note, outside CI.
pub fn check_it_fails_in_ci_without_the_jars(name: &str) {
    let empty = tempfile::tempdir().unwrap();
    let run = |ci: bool| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env("MEDALLION_KAFKA_JARS", empty.path());
        if ci {
            cmd.env("CI", "true");
        } else {
            cmd.env_remove("CI");
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (passed, text) = run(true);
    assert!(!passed, "under CI, {name} passed without the jars:\n{text}");
    assert!(text.contains("CI must run this test"), "{text}");
    assert!(text.contains("1 failed"), "{text}");
    let (passed, text) = run(false);
    assert!(
        passed,
        "outside CI, {name} failed without the jars:\n{text}"
    );
    assert!(text.contains("skipped: no Apache Kafka jars"), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// A real Apache Kafka broker of one test's own: a single KRaft node on free loopback
/// ports, from the jars `.ci/run` fetches with Maven ($MEDALLION_KAFKA_JARS). Stopped
/// when dropped.
pub struct ApacheKafka {
    _server: medallion::kafka_server::KafkaServer,
    pub bootstrap: String,
    /// With [`ApacheKafka::start_secured`]: the CA that signed the broker's certificate.
    pub ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// SCRAM users of [`ApacheKafka::start_secured`] and [`TestBroker::start_scram`]:
/// (mechanism, user, password).
pub const SCRAM_USERS: [(&str, &str, &str); 2] = [
    ("SCRAM-SHA-256", "alice", "alice-s3cret-pw"),
    ("SCRAM-SHA-512", "bob", "bob-s3cret-pw"),
];

/// A SCRAM credential as RFC 5802 derives it (what Kafka's own tooling stores):
/// stored key H(HMAC(salted, "Client Key")) and server key HMAC(salted, "Server Key").
fn scram_credential(
    mechanism: tansu_sans_io::ScramMechanism,
    password: &str,
) -> tansu_storage::ScramCredential {
    use hmac::{Hmac, Mac};
    use sha2::Digest;
    const SALT: &[u8] = b"medallion-test-salt";
    const ITERATIONS: u32 = 4096;
    macro_rules! derive {
        ($digest:ty, $len:expr) => {{
            let mut salted = [0u8; $len];
            pbkdf2::pbkdf2_hmac::<$digest>(password.as_bytes(), SALT, ITERATIONS, &mut salted);
            let hmac = |message: &[u8]| {
                let mut mac = <Hmac<$digest> as Mac>::new_from_slice(&salted).unwrap();
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            };
            let stored_key = <$digest>::digest(hmac(b"Client Key")).to_vec();
            (stored_key, hmac(b"Server Key"))
        }};
    }
    let (stored_key, server_key) = match mechanism {
        tansu_sans_io::ScramMechanism::Scram256 => derive!(sha2::Sha256, 32),
        tansu_sans_io::ScramMechanism::Scram512 => derive!(sha2::Sha512, 64),
    };
    tansu_storage::ScramCredential {
        salt: bytes::Bytes::from_static(SALT),
        iterations: ITERATIONS as i32,
        stored_key: stored_key.into(),
        server_key: server_key.into(),
    }
}

/// Makes a throwaway CA and a certificate for 127.0.0.1 signed by it, in `dir`; returns
/// the CA file and a PEM keystore (key and certificate) for the broker.
pub fn throwaway_certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca = format!("{name}-ca.pem");
    let ca_key = format!("{name}-ca.key");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "server.key",
        "-out",
        "server.pk8.pem",
    ]);
    let keystore = dir.join("keystore.pem");
    let mut pem = std::fs::read(dir.join("server.pk8.pem")).unwrap();
    pem.extend(std::fs::read(dir.join("server.pem")).unwrap());
    std::fs::write(&keystore, pem).unwrap();
    (dir.join(ca), keystore)
}

impl ApacheKafka {
    /// Starts the broker, or `None` (skipped locally, a failure in CI) without the jars.
    pub fn start() -> Option<ApacheKafka> {
        Self::launch(false)
    }

    /// Starts the broker with a SASL_SSL listener for clients (a throwaway CA, SCRAM-SHA-256
    /// and -512 users created with Kafka's StorageTool): a hosted Kafka's setting.
    pub fn start_secured() -> Option<ApacheKafka> {
        Self::launch(true)
    }

    fn launch(secured: bool) -> Option<ApacheKafka> {
        use medallion::kafka_server::{KafkaServer, SaslSsl};
        let jars = KafkaServer::default_jars();
        if !KafkaServer::jars_present(&jars) {
            skip_outside_ci(
                &format!("no Apache Kafka jars in {}", jars.display()),
                "run .ci/run, which fetches them into $MEDALLION_KAFKA_JARS",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut sasl_ssl = None;
        let mut ca = None;
        if secured {
            let (ca_file, keystore) = throwaway_certificates(dir.path(), "broker");
            let users = SCRAM_USERS
                .iter()
                .map(|(m, u, p)| (m.to_string(), u.to_string(), p.to_string()))
                .collect();
            sasl_ssl = Some(SaslSsl { keystore, users });
            ca = Some(ca_file);
        }
        let server = KafkaServer::start(&jars, &dir.path().join("kafka"), sasl_ssl.as_ref())
            .expect("Apache Kafka starts");
        Some(ApacheKafka {
            bootstrap: server.bootstrap().to_string(),
            _server: server,
            ca,
            _dir: dir,
        })
    }
}
