//! A real Apache Kafka broker: single-node KRaft, run from the jars of
//! `org.apache.kafka:kafka_2.13` on Maven Central (`.ci/kafka/pom.xml` fetches them).
//!
//! It is the reference broker: the conformance tests and the benchmarks start one on free
//! loopback ports, in a folder of their own, and stop it when they are done. Nothing is
//! pre-started.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// A KRaft cluster id: a base64 UUID.
const CLUSTER_ID: &str = "UqYEAkduTVueG0987FYXMA";

/// Errors starting Apache Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaServerError {
    #[error("no Apache Kafka jars in {0}: fetch them with `mvn -f .ci/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory={0} -DincludeScope=runtime && touch {0}/.complete` (bash .ci/run does it), or set MEDALLION_KAFKA_JARS")]
    NoJars(PathBuf),
    #[error("cannot prepare Apache Kafka in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run java for Apache Kafka: {0}. Install Java 17 (a JDK or JRE on PATH)")]
    Java(std::io::Error),
    #[error("formatting Apache Kafka's KRaft storage in {0} failed; see {0}/format.log")]
    Format(PathBuf),
    #[error("Apache Kafka exited during start-up; see {0}/kafka.log")]
    Exited(PathBuf),
    #[error("Apache Kafka did not accept connections within {START_TIMEOUT:?}; see {0}/kafka.log")]
    Timeout(PathBuf),
}

/// A SASL_SSL listener for clients, as a hosted Kafka has.
#[derive(Debug, Clone)]
pub struct SaslSsl {
    /// A PEM file with the broker's private key and certificate.
    pub keystore: PathBuf,
    /// SCRAM users, created with Kafka's StorageTool: (mechanism, user, password).
    pub users: Vec<(String, String, String)>,
}

/// A running Apache Kafka broker; dropping it stops it.
pub struct KafkaServer {
    child: Child,
    bootstrap: String,
}

impl KafkaServer {
    /// The jars folder: `MEDALLION_KAFKA_JARS`, or the cache `.ci/run` fills.
    pub fn default_jars() -> PathBuf {
        std::env::var("MEDALLION_KAFKA_JARS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/medallion-tools/kafka-4.1.0")
            })
    }

    /// Whether `jars` holds a complete download.
    pub fn jars_present(jars: &Path) -> bool {
        jars.join(".complete").exists()
    }

    /// Formats a KRaft storage under `dir` and starts the broker on free loopback ports;
    /// clients get PLAINTEXT, or SASL_SSL with `sasl_ssl`. Waits until it accepts
    /// connections.
    pub fn start(
        jars: &Path,
        dir: &Path,
        sasl_ssl: Option<&SaslSsl>,
    ) -> Result<Self, KafkaServerError> {
        if !Self::jars_present(jars) {
            return Err(KafkaServerError::NoJars(jars.into()));
        }
        let io = |source| KafkaServerError::Io {
            path: dir.into(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // A fresh broker each time: storage left by an earlier one would not format.
        let data = dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(io)?;
        }
        let (broker, controller, secure) = (free_port()?, free_port()?, free_port()?);
        let mut props = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{broker}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\nlog.dirs={}\n\
             offsets.topic.replication.factor=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\nshare.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
            dir.join("data").display()
        );
        if let Some(s) = sasl_ssl {
            // Later keys win: clients get a SASL_SSL listener, the broker keeps PLAINTEXT.
            props += &format!(
                "listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{secure}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{broker},SASL_SSL://127.0.0.1:{secure}\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL\n\
                 sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512\n\
                 listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
                 ssl.keystore.type=PEM\nssl.keystore.location={}\n",
                s.keystore.display()
            );
        }
        let props_file = dir.join("server.properties");
        std::fs::write(&props_file, props).map_err(io)?;
        let props_text = props_file.display().to_string();

        let mut format = vec![
            "kafka.tools.StorageTool".to_string(),
            "format".into(),
            "-t".into(),
            CLUSTER_ID.into(),
            "-c".into(),
            props_text.clone(),
        ];
        for (mechanism, user, password) in sasl_ssl.iter().flat_map(|s| &s.users) {
            format.push("-S".into());
            format.push(format!("{mechanism}=[name={user},password={password}]"));
        }
        let status = java(jars, &format, &dir.join("format.log"))?
            .status()
            .map_err(KafkaServerError::Java)?;
        if !status.success() {
            return Err(KafkaServerError::Format(dir.into()));
        }
        let child = java(
            jars,
            &["kafka.Kafka".to_string(), props_text],
            &dir.join("kafka.log"),
        )?
        .spawn()
        .map_err(KafkaServerError::Java)?;
        let port = if sasl_ssl.is_some() { secure } else { broker };
        let mut server = KafkaServer {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if server.child.try_wait().map_err(io)?.is_some() {
                return Err(KafkaServerError::Exited(dir.into()));
            }
            if Instant::now() > deadline {
                return Err(KafkaServerError::Timeout(dir.into()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(server)
    }

    /// `127.0.0.1:PORT` of the client listener.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The broker's process id (to measure its memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `java -cp <jars>/* ARGS`, its output into `log`.
fn java(jars: &Path, args: &[String], log: &Path) -> Result<Command, KafkaServerError> {
    let io = |source| KafkaServerError::Io {
        path: log.into(),
        source,
    };
    let out = std::fs::File::create(log).map_err(io)?;
    let err = out.try_clone().map_err(io)?;
    let mut cmd = Command::new("java");
    cmd.args(["-Xmx512m", "-cp", &format!("{}/*", jars.display())])
        .args(args)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    Ok(cmd)
}

fn free_port() -> Result<u16, KafkaServerError> {
    let io = |source| KafkaServerError::Io {
        path: "127.0.0.1:0".into(),
        source,
    };
    let probe = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(probe.local_addr().map_err(io)?.port())
}
