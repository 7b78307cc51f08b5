//! A hosted Kafka's setting: Apache Kafka with a SASL_SSL listener (a throwaway CA made
//! by the test) and SCRAM users created with Kafka's own tooling.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A workspace whose bundle logs in to `bootstrap` with SCRAM `mechanism` over
/// `protocol`, as the user and password in KAFKA_USERNAME and KAFKA_PASSWORD; `extra`
/// holds more `kafka:` settings.
fn scram_workspace(
    bootstrap: &str,
    protocol: &str,
    mechanism: &str,
    extra: &[(&str, &str)],
) -> Workspace {
    let mut w = Workspace::new();
    let mut settings = vec![
        ("security.protocol", protocol),
        ("sasl.mechanism", mechanism),
        ("sasl.username_env", "KAFKA_USERNAME"),
        ("sasl.password_env", "KAFKA_PASSWORD"),
    ];
    settings.extend_from_slice(extra);
    w.set_kafka_settings(&settings);
    w.set_var("kafka_bootstrap_servers", bootstrap);
    w.land("a.csv", &csv(RUN_1));
    w
}

/// [`scram_workspace`] over SASL_SSL with Apache Kafka, trusting `ca`.
fn secured_workspace(
    kafka: &ApacheKafka,
    mechanism: &str,
    ca: &Path,
    extra: &[(&str, &str)],
) -> Workspace {
    let ca = ca.display().to_string();
    let mut settings = vec![("ssl.ca.location", ca.as_str())];
    settings.extend_from_slice(extra);
    scram_workspace(&kafka.bootstrap, "SASL_SSL", mechanism, &settings)
}

/// Every byte under `dir` that is a file, searched for `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Runs the whole pipeline in `w` as `user`, and checks that it reached gold.
async fn passes_end_to_end(w: &Workspace, mechanism: &str, user: &str, password: &str) {
    let out = w
        .run_binary(
            &[],
            &[("KAFKA_USERNAME", user), ("KAFKA_PASSWORD", password)],
        )
        .await;
    assert!(
        out.status.success(),
        "{mechanism}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read by path: resolving the bundle here would need the password in this process.
    let table = w
        .root()
        .join(".medallion/warehouse/dev/gold/updated_stocks_gold");
    let rows = query_table(&table, "SELECT count(*) FROM t").await;
    assert_eq!(rows[0][0], "4", "{mechanism}");
}

/// A wrong password fails fast, naming the mechanism, never the password nor the user
/// (a value from the environment, masked).
async fn wrong_password_fails_fast(w: &Workspace) {
    let started = Instant::now();
    let out = w
        .run_binary(
            &[],
            &[
                ("KAFKA_USERNAME", "alice"),
                ("KAFKA_PASSWORD", "not-her-pw-123"),
            ],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fast: {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("refused the SCRAM-SHA-256 login of user `***`") && !err.contains("alice"),
        "{err}"
    );
    assert!(
        !err.contains("not-her-pw-123"),
        "the password leaked: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sasl_ssl_with_scram_as_a_hosted_kafka() {
    let Some(kafka) = ApacheKafka::start_secured() else {
        return;
    };
    let ca = kafka.ca.clone().unwrap();

    // The pipeline passes end to end with SCRAM-SHA-256 and with SCRAM-SHA-512.
    for (mechanism, user, password) in SCRAM_USERS {
        let w = secured_workspace(&kafka, mechanism, &ca, &[]);
        passes_end_to_end(&w, mechanism, user, password).await;
    }
    wrong_password_fails_fast(&secured_workspace(&kafka, "SCRAM-SHA-256", &ca, &[])).await;

    // A CA that did not sign the broker's certificate fails with a certificate error.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = throwaway_certificates(other.path(), "other");
    let w = secured_workspace(&kafka, "SCRAM-SHA-256", &other_ca, &[]);
    let out = w
        .run_binary(
            &[],
            &[
                ("KAFKA_USERNAME", "alice"),
                ("KAFKA_PASSWORD", SCRAM_USERS[0].2),
            ],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("TLS handshake with Kafka at") && err.contains("certificate verify failed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_leaks_at_any_log_level() {
    let Some(kafka) = ApacheKafka::start_secured() else {
        return;
    };
    let ca = kafka.ca.clone().unwrap();
    let (_, user, password) = SCRAM_USERS[0];
    let debug: &[(&str, &str)] = &[("debug", "all")];
    for (level, debug) in [("error", &[][..]), ("info", &[][..]), ("trace", debug)] {
        let w = secured_workspace(&kafka, "SCRAM-SHA-256", &ca, debug);
        let out = w
            .run_binary(
                &[],
                &[
                    ("KAFKA_USERNAME", user),
                    ("KAFKA_PASSWORD", password),
                    ("MEDALLION_LOG", level),
                ],
            )
            .await;
        assert!(
            out.status.success(),
            "{level}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        assert!(
            !String::from_utf8_lossy(&printed).contains(password),
            "{level}: the password is in the output"
        );
        assert!(
            printed.len() > 100,
            "{level}: the run printed something to search"
        );
        assert_eq!(
            files_containing(w.root(), password),
            Vec::<String>::new(),
            "{level}: the password is in the tables, the state or the logs"
        );
        // `bundle validate` prints settings: masked.
        let shown = w.medallion(
            &["bundle", "validate"],
            &[("KAFKA_USERNAME", user), ("KAFKA_PASSWORD", password)],
        );
        assert!(shown.status.success());
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.contains("sasl.password: '***'") || shown.contains("sasl.password: \"***\""),
            "{shown}"
        );
        assert!(!shown.contains(password));
    }
}

/// The embedded broker's own SCRAM support: tansu with authentication required, its users
/// stored through tansu's storage API, reached over SASL_PLAINTEXT (tansu has no TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_broker_authenticates_with_scram() {
    let broker = TestBroker::start_scram().await;
    for (mechanism, user, password) in SCRAM_USERS {
        let w = scram_workspace(&broker.bootstrap(), "SASL_PLAINTEXT", mechanism, &[]);
        passes_end_to_end(&w, mechanism, user, password).await;
    }
    let w = scram_workspace(&broker.bootstrap(), "SASL_PLAINTEXT", "SCRAM-SHA-256", &[]);
    wrong_password_fails_fast(&w).await;
    // Without SASL, the broker lets nothing through.
    let w = Workspace::with_broker(&broker);
    let out = w.run_binary(&["--task", "ingest"], &[]).await;
    assert!(!out.status.success(), "an anonymous client was let in");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it probably requires authentication or TLS. Set security.protocol"),
        "{err}"
    );
}

#[test]
fn without_the_jars_the_suite_fails_in_ci_and_skips_locally() {
    check_it_fails_in_ci_without_the_jars("sasl_ssl_with_scram_as_a_hosted_kafka");
}
