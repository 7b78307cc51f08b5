//! The bundle format: validation errors that name file:line:column, development and
//! production modes, and the JSON Schema.

mod common;

use common::*;
use medallion::bundle::job::PauseStatus;
use medallion::bundle::{Bundle, Override};

const JOB_FILE: &str = "resources/kafka_stream_job.yml";

/// Replaces `from` by `to` in the workspace's job file; returns the 1-based line of the change.
fn break_job(w: &Workspace, from: &str, to: &str) -> usize {
    let path = w.root().join(JOB_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text
        .find(from)
        .unwrap_or_else(|| panic!("`{from}` is in {JOB_FILE}"));
    let line = text[..at].matches('\n').count() + 1;
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    line
}

fn validate(w: &Workspace, args: &[&str]) -> (bool, String) {
    let out = w.medallion(&[&["bundle", "validate"], args].concat(), &[]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Breaks the job file and expects `expected` at the changed line (plus `offset`).
fn assert_invalid(from: &str, to: &str, offset: usize, expected: &str) {
    let w = Workspace::new();
    assert!(validate(&w, &[]).0, "the shipped bundle is valid");
    let line = break_job(&w, from, to);
    let (ok, err) = validate(&w, &[]);
    assert!(!ok, "{err}");
    let at = format!("{JOB_FILE}:{}:", line + offset);
    assert!(err.contains(&at), "expected `{at}` in:\n{err}");
    assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
}

#[test]
fn a_cycle_is_reported_where_it_is() {
    assert_invalid(
        "        - task_key: ingest\n",
        "        - task_key: ingest\n          depends_on: [{ task_key: silver_gold }]\n",
        1,
        "cycle: ingest → silver_gold → bronze",
    );
}

#[test]
fn an_unknown_depends_on_is_reported_where_it_is() {
    assert_invalid(
        "depends_on: [{ task_key: bronze }]",
        "depends_on: [{ task_key: bronze_ }]",
        0,
        "depends on `bronze_`, which is not a task of this job",
    );
}

#[test]
fn a_bad_cron_expression_is_reported_where_it_is() {
    assert_invalid(
        "quartz_cron_expression: \"0 0 6 * * ?\"",
        "quartz_cron_expression: \"0 0 61 * * ?\"",
        0,
        "`0 0 61 * * ?` is not a Quartz cron expression",
    );
}

#[test]
fn a_bad_time_zone_is_reported_where_it_is() {
    assert_invalid(
        "timezone_id: UTC",
        "timezone_id: Mars/Olympus_Mons",
        0,
        "`Mars/Olympus_Mons` is not an IANA time zone",
    );
}

#[test]
fn an_unknown_variable_reference_is_reported_where_it_is() {
    assert_invalid(
        "topic: ${var.kafka_topic}",
        "topic: ${var.kafka_topik}",
        0,
        "unknown reference `${var.kafka_topik}`",
    );
}

#[test]
fn line_limits_below_their_minimum_are_reported_where_they_are() {
    for (setting, expected) in [
        (
            "max_line_bytes: 63",
            "max_line_bytes is 63; it must be at least 64",
        ),
        ("max_fields: 1", "max_fields is 1; it must be at least 2"),
    ] {
        assert_invalid(
            "key_column: Index\n",
            &format!("key_column: Index\n            {setting}\n"),
            1,
            expected,
        );
    }
    assert_invalid(
        "partition_by: year_month\n",
        "partition_by: year_month\n            batch_bytes: 0\n",
        1,
        "batch_bytes is 0; it must be at least 1",
    );
    // The minimums themselves are valid.
    let w = Workspace::new();
    break_job(
        &w,
        "key_column: Index\n",
        "key_column: Index\n            max_line_bytes: 64\n            max_fields: 2\n",
    );
    let (ok, err) = validate(&w, &[]);
    assert!(ok, "{err}");
}

#[test]
fn development_mode_prefixes_names_and_pauses_schedules() {
    let w = Workspace::new();
    let bundle = Bundle::load(&w.bundle_file()).unwrap();
    let dev = bundle.resolve(Some("dev"), &[]).unwrap();
    let job = &dev.jobs["kafka_stream_job"];
    assert_eq!(job.name, format!("[dev {}] kafka_stream_job", dev.user));
    assert_eq!(
        job.schedule.as_ref().unwrap().pause_status,
        Some(PauseStatus::Paused)
    );

    let kafka = Override::parse_cli("kafka_bootstrap_servers=kafka-prod:9096").unwrap();
    let prod = bundle.resolve(Some("prod"), &[kafka]).unwrap();
    let job = &prod.jobs["kafka_stream_job"];
    assert_eq!(job.name, "kafka_stream_job");
    assert_eq!(
        job.schedule.as_ref().unwrap().pause_status,
        Some(PauseStatus::Unpaused)
    );
    assert_eq!(prod.kafka.partitions, 6);

    // An explicit UNPAUSED is kept in development mode.
    break_job(
        &w,
        "timezone_id: UTC",
        "timezone_id: UTC\n        pause_status: UNPAUSED",
    );
    let dev = Bundle::load(&w.bundle_file())
        .unwrap()
        .resolve(None, &[])
        .unwrap();
    let schedule = dev.jobs["kafka_stream_job"].schedule.clone().unwrap();
    assert_eq!(schedule.pause_status, Some(PauseStatus::Unpaused));

    // Variables reach the tasks' settings through ${var.*}.
    let o = Override::parse_cli("kafka_topic=Other").unwrap();
    let dev = Bundle::load(&w.bundle_file())
        .unwrap()
        .resolve(None, &[o])
        .unwrap();
    assert_eq!(dev.jobs["kafka_stream_job"].topics(), ["Other"]);
}

fn yaml_as_json(path: &std::path::Path) -> serde_json::Value {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::to_value(yaml).unwrap()
}

#[test]
fn the_json_schema_accepts_the_shipped_bundle_and_rejects_typos() {
    let printed = Workspace::new().medallion_ok(&["bundle", "schema"]);
    let schema: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "medallion.yml",
        JOB_FILE,
        "examples/weather/medallion.yml",
        "examples/weather/resources/weather_pipeline.yml",
        "examples/weather/resources/weather_job.yml",
    ] {
        let doc = yaml_as_json(&root.join(file));
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{file}: {errors:?}");
    }
    let mut doc = yaml_as_json(&root.join(JOB_FILE));
    doc["resources"]["jobs"]["kafka_stream_job"]["max_concurent_runs"] = 2.into();
    assert!(!validator.is_valid(&doc), "a misspelt key is rejected");
    let mut doc = yaml_as_json(&root.join("examples/weather/resources/weather_pipeline.yml"));
    doc["resources"]["pipelines"]["weather"]["librairies"] = serde_json::json!([]);
    assert!(
        !validator.is_valid(&doc),
        "a misspelt pipeline key is rejected"
    );
}
