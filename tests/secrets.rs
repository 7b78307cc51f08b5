//! Secrets never leave the process in clear: not in `bundle validate`, not in errors, not
//! in `deployment.json`; a deployed job takes its secret variables from its environment.

mod common;

use common::*;

const JOB_FILE: &str = "resources/kafka_stream_job.yml";

const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----pem-body-1234";
const OAUTH_CONFIG: &str = "principal=svc scope=x oauth-cfg-5678";
const HOOK_TOKEN: &str = "hook-token-9012";

fn edit(w: &Workspace, file: &str, from: &str, to: &str) {
    let path = w.root().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "`{from}` in {file}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// A workspace whose bundle declares the secret variable `webhook_token`, used in the
/// job's webhook URL.
fn with_webhook_token() -> Workspace {
    let w = Workspace::new();
    edit(
        &w,
        "medallion.yml",
        "variables:\n",
        "variables:\n  webhook_token:\n    description: The token of the team's webhook.\n    default: \"\"\n",
    );
    edit(
        &w,
        JOB_FILE,
        "webhook_notifications:\n        on_failure: []",
        "webhook_notifications:\n        on_failure: [{ url: \"https://hooks.example.com/services/${var.webhook_token}\" }]",
    );
    w
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn validate_masks_env_secrets_secret_variables_and_webhook_urls() {
    let w = with_webhook_token();
    w.set_kafka_settings(&[
        ("ssl.key.pem_env", "KEY_PEM"),
        ("sasl.oauthbearer.config_env", "OAUTH_CONFIG"),
    ]);
    let out = w.medallion(
        &[
            "bundle",
            "validate",
            "--var",
            &format!("webhook_token={HOOK_TOKEN}"),
        ],
        &[("KEY_PEM", KEY_PEM), ("OAUTH_CONFIG", OAUTH_CONFIG)],
    );
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for secret in [KEY_PEM, OAUTH_CONFIG, HOOK_TOKEN, "/services/"] {
        assert!(!shown.contains(secret), "`{secret}` is shown:\n{shown}");
    }
    assert!(shown.contains("ssl.key.pem: '***'"), "{shown}");
    assert!(shown.contains("sasl.oauthbearer.config: '***'"), "{shown}");
    assert!(
        shown.contains("url: https://hooks.example.com/***"),
        "{shown}"
    );
}

#[test]
fn a_secret_written_in_the_bundle_is_refused() {
    let w = Workspace::new();
    w.set_kafka_settings(&[("sasl.oauthbearer.config", "\"principal=svc\"")]);
    let out = w.medallion(&["bundle", "validate"], &[]);
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("`kafka.sasl.oauthbearer.config_env: NAME`"),
        "{shown}"
    );
}

#[test]
fn an_error_quoting_a_secret_variable_masks_it() {
    let w = Workspace::new();
    edit(
        &w,
        "medallion.yml",
        "variables:\n",
        "variables:\n  api_token:\n    description: A token.\n    default: \"\"\n",
    );
    // A secret that ends up where an error quotes it: the topic name.
    edit(
        &w,
        "medallion.yml",
        "default: Stocks",
        "default: ${var.api_token}",
    );
    let out = w.medallion(
        &["bundle", "validate"],
        &[("MEDALLION_VAR_api_token", "not a topic, tok-3456")],
    );
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("variable `kafka_topic` has value `***`"),
        "{shown}"
    );
    assert!(!shown.contains("tok-3456"), "{shown}");
}

#[test]
fn deployment_json_never_holds_a_secret_variable() {
    let w = with_webhook_token();
    let env = [("MEDALLION_VAR_webhook_token", HOOK_TOKEN)];
    let out = w.medallion(&["bundle", "deploy"], &env);
    assert!(out.status.success(), "{}", text(&out));
    let deployed = w.root().join(".medallion/bundle/kafka_stream/dev");
    let state = std::fs::read_to_string(deployed.join("deployment.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        json["secret_variables"],
        serde_json::json!(["webhook_token"])
    );
    assert!(json["variables"].get("webhook_token").is_none(), "{state}");
    for entry in walkdir::WalkDir::new(&deployed) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(HOOK_TOKEN),
                "{} holds the secret",
                entry.path().display()
            );
        }
    }

    // A run of the deployed copy needs the secret from its environment.
    let out = w.medallion(&["bundle", "run"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Export MEDALLION_VAR_webhook_token"),
        "{}",
        text(&out)
    );
    let out = w.medallion(&["bundle", "run"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(HOOK_TOKEN));
}
