//! The JSON Schema of the bundle format, for editors (`medallion bundle schema`).
//!
//! One schema covers `medallion.yml` and the files it includes: every top-level key is
//! allowed in both, as in Databricks Asset Bundles.

use serde_json::{json, Value};

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn table(description: &str) -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z0-9_]+\\.[A-Za-z0-9_]+$", "description": description })
}

fn object(description: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn task_type(description: &str, properties: Value, required: &[&str]) -> Value {
    object(description, properties, required)
}

fn notifications(item: Value) -> Value {
    let list = json!({ "type": "array", "items": item });
    object(
        "Who is told when a run starts, succeeds or fails.",
        json!({ "on_start": list, "on_success": list, "on_failure": list }),
        &[],
    )
}

/// The schema document.
pub fn json_schema() -> Value {
    let scalar = json!({ "type": ["string", "number", "boolean"] });
    let variables = json!({
        "type": "object",
        "description": "Variables, each overridable with --var name=value or MEDALLION_VAR_<name>.",
        "additionalProperties": object(
            "A variable.",
            json!({ "description": string("What the variable is for."), "default": scalar }),
            &["description", "default"],
        ),
    });
    let kafka = json!({
        "type": "object",
        "description": "librdkafka settings. Secrets only as `<key>_env: ENV_VAR_NAME`.",
        "additionalProperties": scalar,
    });
    let tasks = json!({
        "type": "array",
        "items": {
            "type": "object",
            "description": "A task: its key, what it waits for, and exactly one task type.",
            "properties": {
                "task_key": string("The task's name within the job."),
                "depends_on": {
                    "type": "array",
                    "items": object("A task that must succeed first.", json!({ "task_key": string("") }), &["task_key"]),
                },
                "csv_to_kafka": task_type(
                    "CSV landing files (landing_dir) → Kafka.",
                    json!({
                        "topic": string("The topic."),
                        "quarantine_table": table("Where bad rows go."),
                        "required_columns": { "type": "array", "items": { "type": "string" }, "description": "Header columns every file must have; a file without them is quarantined whole." },
                        "key_column": string("The column whose value keys each message (default: no key)."),
                        "max_line_bytes": { "type": "integer", "minimum": 64, "description": "The most bytes one CSV record may have; a longer one is quarantined (default 1048576)." },
                        "max_fields": { "type": "integer", "minimum": 2, "description": "The most fields one CSV record may have; a wider one is quarantined (default 4096)." },
                    }),
                    &["topic", "quarantine_table"],
                ),
                "kafka_to_delta": task_type(
                    "Kafka → a Bronze Delta table, exactly once.",
                    json!({
                        "topic": string("The topic."),
                        "table": table("The Bronze table."),
                        "partition_by": { "enum": ["year_month"] },
                        "fail_on_data_loss": { "type": "boolean", "description": "Fail when the topic no longer holds records bronze has not read (retention, compaction), as Spark's failOnDataLoss (default true); false skips them and says how many." },
                        "batch_bytes": { "type": "integer", "minimum": 1, "description": "The most bytes of keys and values in one bronze commit, beside batch_rows (default 268435456)." },
                    }),
                    &["topic", "table", "partition_by"],
                ),
                "pipeline_task": task_type(
                    "An update of a pipeline of the bundle.",
                    json!({
                        "pipeline_id": string("${resources.pipelines.<key>.id}"),
                        "full_refresh": { "type": "boolean", "description": "Empty every table of the pipeline and recompute it from its sources (default false)." },
                    }),
                    &["pipeline_id"],
                ),
            },
            "required": ["task_key"],
            "additionalProperties": false,
            "minProperties": 2,
            "maxProperties": 3,
        },
    });
    let job = object(
        "A job: tasks as a DAG, a schedule and notifications.",
        json!({
            "name": string("The job's name (prefixed [dev <user>] in development mode)."),
            "tasks": tasks,
            "schedule": object(
                "When the scheduler runs the job.",
                json!({
                    "quartz_cron_expression": string("Quartz cron: seconds minutes hours day-of-month month day-of-week [year]."),
                    "timezone_id": string("An IANA time zone, such as UTC or Europe/Amsterdam."),
                    "pause_status": { "enum": ["PAUSED", "UNPAUSED"] },
                }),
                &["quartz_cron_expression", "timezone_id"],
            ),
            "email_notifications": notifications(json!({ "type": "string", "format": "email" })),
            "webhook_notifications": notifications(object("A webhook.", json!({ "url": string("Receives an HTTP POST.") }), &["url"])),
            "max_concurrent_runs": { "type": "integer", "minimum": 1 },
            "queue": object("Queue runs beyond max_concurrent_runs instead of skipping them.", json!({ "enabled": { "type": "boolean" } }), &[]),
        }),
        &["name", "tasks"],
    );
    let scalar_map = json!({ "type": "object", "additionalProperties": scalar });
    let pipeline = object(
        "A declarative pipeline: SQL files of streaming tables, materialized views, views and flows.",
        json!({
            "name": string("The pipeline's name."),
            "catalog": string("The catalog of its tables (default: the target's name)."),
            "schema": string("The schema of unqualified table names (default: default)."),
            "libraries": {
                "type": "array",
                "description": "The SQL files, relative to the file that declares the pipeline.",
                "items": {
                    "type": "object",
                    "properties": {
                        "glob": object("Files matching a glob.", json!({ "include": string("Such as ../transformations/**/*.sql.") }), &["include"]),
                        "file": object("One file.", json!({ "path": string("") }), &["path"]),
                    },
                    "additionalProperties": false,
                    "minProperties": 1,
                    "maxProperties": 1,
                },
            },
            "configuration": json!({ "type": "object", "description": "`${key}` in the SQL is replaced by the value.", "additionalProperties": scalar }),
            "sinks": {
                "type": "object",
                "description": "External targets of flows.",
                "additionalProperties": object(
                    "A sink.",
                    json!({ "format": { "enum": ["kafka", "delta"] }, "options": scalar_map }),
                    &["format"],
                ),
            },
            "continuous": { "type": "boolean", "description": "Keep running, as --continuous." },
            "development": { "type": "boolean", "description": "Accepted for Databricks compatibility." },
        }),
        &["name", "libraries"],
    );
    let target = object(
        "A deployment target; its name is the catalog of its tables.",
        json!({
            "mode": { "enum": ["development", "production"] },
            "default": { "type": "boolean" },
            "workspace": object("Where the target is deployed.", json!({ "root_path": string("A folder, or an s3:// URI.") }), &[]),
            "variables": { "type": "object", "additionalProperties": scalar },
            "kafka": kafka,
            "smtp": object(
                "The SMTP relay for email notifications.",
                json!({ "host": string(""), "port": { "type": "integer" }, "from": string("The sender address.") }),
                &["host", "from"],
            ),
        }),
        &[],
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://medallion.dev/schemas/bundle.json",
        "title": "medallion bundle",
        "type": "object",
        "properties": {
            "bundle": object("The bundle.", json!({ "name": string("The bundle's name.") }), &["name"]),
            "include": { "type": "array", "items": string("A glob of further bundle files, such as resources/*.yml.") },
            "variables": variables,
            "kafka": kafka,
            "targets": { "type": "object", "additionalProperties": target },
            "resources": object(
                "Resources of the bundle.",
                json!({
                    "jobs": { "type": "object", "additionalProperties": job },
                    "pipelines": { "type": "object", "additionalProperties": pipeline },
                }),
                &[],
            ),
        },
        "additionalProperties": false,
    })
}
