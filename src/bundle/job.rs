//! A job resource (`resources.jobs.<key>`), as in a Databricks Asset Bundle: its tasks
//! with `depends_on`, the task types and their settings, the schedule and notifications.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::TableName;

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDef {
    pub name: String,
    pub tasks: Vec<TaskDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default)]
    pub email_notifications: Notifications<String>,
    #[serde(default)]
    pub webhook_notifications: Notifications<Webhook>,
    #[serde(default = "one")]
    pub max_concurrent_runs: u32,
    #[serde(default)]
    pub queue: Queue,
}

fn one() -> u32 {
    1
}

/// A task: its key, what it waits for, and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDef {
    pub task_key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOn>,
    #[serde(flatten)]
    pub kind: TaskKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOn {
    pub task_key: String,
}

/// The task types medallion runs, each with its settings. A task has exactly one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// CSV landing files → Kafka.
    CsvToKafka(CsvToKafka),
    /// Kafka → a Bronze Delta table.
    KafkaToDelta(KafkaToDelta),
    /// An update of a pipeline of the bundle (`resources.pipelines.<key>`).
    PipelineTask(PipelineTask),
}

/// `pipeline_task`: runs an update of a pipeline, as in Databricks Asset Bundles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTask {
    /// `${resources.pipelines.<key>.id}`: the pipeline's key.
    pub pipeline_id: String,
    /// Empty every table of the pipeline and recompute it from its sources.
    #[serde(default)]
    pub full_refresh: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvToKafka {
    pub topic: String,
    pub quarantine_table: String,
    /// The header columns every file must have; a file without them is quarantined
    /// whole (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_columns: Vec<String>,
    /// The column whose value becomes each message's key (none by default: messages
    /// without a key, spread over the partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    /// The most bytes one CSV record may have; a longer one is quarantined.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: u64,
    /// The most fields one CSV record may have; a wider one is quarantined.
    #[serde(default = "default_max_fields")]
    pub max_fields: u64,
}

fn default_max_line_bytes() -> u64 {
    crate::source::DEFAULT_MAX_LINE_BYTES
}

fn default_max_fields() -> u64 {
    crate::source::DEFAULT_MAX_FIELDS
}

impl CsvToKafka {
    /// How the landing files are read: comma-separated with a header, checked for the
    /// required columns, keyed by the key column.
    pub fn csv_format(&self) -> crate::source::CsvFormat {
        crate::source::CsvFormat {
            delimiter: b',',
            has_header: true,
            required: self.required_columns.clone(),
            key: self.key_column.clone(),
        }
    }

    pub fn line_limits(&self) -> crate::source::LineLimits {
        crate::source::LineLimits {
            max_line_bytes: self.max_line_bytes,
            max_fields: self.max_fields,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaToDelta {
    pub topic: String,
    pub table: String,
    /// The partition column: `year_month` (`yyyy-MM` of the record timestamp).
    pub partition_by: String,
    /// Whether records that the topic no longer holds (retention or compaction removed
    /// them before bronze read them) fail the task, as Spark's `failOnDataLoss`. With
    /// `false`, the task skips them and its summary says how many.
    #[serde(default = "yes")]
    pub fail_on_data_loss: bool,
    /// The most bytes of keys and values in one bronze commit, beside `batch_rows`.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
}

fn yes() -> bool {
    true
}

fn default_batch_bytes() -> u64 {
    256 << 20
}

/// A Quartz cron schedule in a time zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub quartz_cron_expression: String,
    pub timezone_id: String,
    /// `PAUSED` or `UNPAUSED`; in development mode a schedule is paused unless this says
    /// `UNPAUSED` explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_status: Option<PauseStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PauseStatus {
    Paused,
    Unpaused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notifications<T> {
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub on_start: Vec<T>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<T>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<T>,
}

impl<T> Default for Notifications<T> {
    fn default() -> Self {
        Notifications {
            on_start: Vec::new(),
            on_success: Vec::new(),
            on_failure: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    #[serde(default)]
    pub enabled: bool,
}

/// A problem in a job, at a path within the job (`tasks[2].depends_on[0].task_key`).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl TaskKind {
    /// The type key, as written in the bundle.
    pub fn type_name(&self) -> &'static str {
        match self {
            TaskKind::CsvToKafka(_) => "csv_to_kafka",
            TaskKind::KafkaToDelta(_) => "kafka_to_delta",
            TaskKind::PipelineTask(_) => "pipeline_task",
        }
    }

    /// Whether the task talks to Kafka.
    pub fn uses_kafka(&self) -> bool {
        matches!(self, TaskKind::CsvToKafka(_) | TaskKind::KafkaToDelta(_))
    }

    /// The table names in the settings, with their setting key.
    fn tables(&self) -> Vec<(&'static str, &str)> {
        match self {
            TaskKind::CsvToKafka(s) => vec![("quarantine_table", &s.quarantine_table)],
            TaskKind::KafkaToDelta(s) => vec![("table", &s.table)],
            TaskKind::PipelineTask(_) => vec![],
        }
    }
}

/// Parses a `schema.table` setting.
pub fn table_name(text: &str) -> Option<TableName> {
    match text.split('.').collect::<Vec<_>>().as_slice() {
        [s, t] if valid_part(s) && valid_part(t) => Some(TableName::new(*s, *t)),
        _ => None,
    }
}

fn valid_part(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The parsed cron expression (Quartz: seconds, minutes, hours, day of month, month,
/// day of week with 1 = Sunday, optional year).
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .alternative_weekdays(true)
        .dom_and_dow(false)
        .build()
        .parse(expression)
        .map_err(|e| format!("`{expression}` is not a Quartz cron expression: {e}"))
}

impl JobDef {
    /// The URL of every webhook the job notifies.
    pub fn webhook_urls(&self) -> impl Iterator<Item = &str> {
        let w = &self.webhook_notifications;
        w.on_start
            .iter()
            .chain(&w.on_success)
            .chain(&w.on_failure)
            .map(|h| h.url.as_str())
    }

    /// Every problem of the job: keys, dependencies, cycles, settings, schedule.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, t) in self.tasks.iter().enumerate() {
            if keys.insert(&t.task_key, i).is_some() {
                problems.push(Problem {
                    path: format!("tasks[{i}].task_key"),
                    message: format!("task_key `{}` is used twice", t.task_key),
                });
            }
        }
        for (i, t) in self.tasks.iter().enumerate() {
            for (j, d) in t.depends_on.iter().enumerate() {
                if !keys.contains_key(d.task_key.as_str()) {
                    problems.push(Problem {
                        path: format!("tasks[{i}].depends_on[{j}].task_key"),
                        message: format!(
                            "task `{}` depends on `{}`, which is not a task of this job (tasks: {})",
                            t.task_key,
                            d.task_key,
                            keys.keys().copied().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
            for (key, value) in t.kind.tables() {
                if table_name(value).is_none() {
                    problems.push(Problem {
                        path: format!("tasks[{i}].{}.{key}", t.kind.type_name()),
                        message: format!("`{value}` is not a table name of the form schema.table"),
                    });
                }
            }
            if let TaskKind::CsvToKafka(s) = &t.kind {
                use crate::source::{MIN_MAX_FIELDS, MIN_MAX_LINE_BYTES};
                for (key, value, min) in [
                    ("max_line_bytes", s.max_line_bytes, MIN_MAX_LINE_BYTES),
                    ("max_fields", s.max_fields, MIN_MAX_FIELDS),
                ] {
                    if value < min {
                        problems.push(Problem {
                            path: format!("tasks[{i}].csv_to_kafka.{key}"),
                            message: format!("{key} is {value}; it must be at least {min}"),
                        });
                    }
                }
            }
            if let TaskKind::KafkaToDelta(s) = &t.kind {
                if s.batch_bytes == 0 {
                    problems.push(Problem {
                        path: format!("tasks[{i}].kafka_to_delta.batch_bytes"),
                        message: "batch_bytes is 0; it must be at least 1 (the default is \
                                  268435456, 256 MB)"
                            .into(),
                    });
                }
                if s.partition_by != "year_month" {
                    problems.push(Problem {
                        path: format!("tasks[{i}].kafka_to_delta.partition_by"),
                        message: format!(
                            "partition_by `{}` is not supported; use year_month",
                            s.partition_by
                        ),
                    });
                }
            }
        }
        let emails = &self.email_notifications;
        for (event, list) in [
            ("on_start", &emails.on_start),
            ("on_success", &emails.on_success),
            ("on_failure", &emails.on_failure),
        ] {
            for (i, address) in list.iter().enumerate() {
                if address.contains(['\r', '\n']) {
                    problems.push(Problem {
                        path: format!("email_notifications.{event}[{i}]"),
                        message: format!(
                            "the email address `{}` holds a line break (CR or LF), which could inject SMTP commands or mail headers. Remove it",
                            address.escape_debug()
                        ),
                    });
                }
            }
        }
        if self.name.contains(['\r', '\n']) {
            problems.push(Problem {
                path: "name".into(),
                message: "the job's name holds a line break (CR or LF); it is the subject of its emails. Remove it".into(),
            });
        }
        if let Some(cycle) = self.cycle() {
            let i = keys[cycle[0].as_str()];
            problems.push(Problem {
                path: format!("tasks[{i}].depends_on"),
                message: format!(
                    "the tasks depend on each other in a cycle: {}",
                    cycle.join(" → ")
                ),
            });
        }
        if let Some(s) = &self.schedule {
            if let Err(message) = parse_cron(&s.quartz_cron_expression) {
                problems.push(Problem {
                    path: "schedule.quartz_cron_expression".into(),
                    message,
                });
            }
            if s.timezone_id.parse::<chrono_tz::Tz>().is_err() {
                problems.push(Problem {
                    path: "schedule.timezone_id".into(),
                    message: format!(
                        "`{}` is not an IANA time zone (such as UTC or Europe/Amsterdam)",
                        s.timezone_id
                    ),
                });
            }
        }
        if self.max_concurrent_runs == 0 {
            problems.push(Problem {
                path: "max_concurrent_runs".into(),
                message: "max_concurrent_runs must be at least 1".into(),
            });
        }
        problems
    }

    /// A cycle among the tasks, as task keys from and back to one task, if there is one.
    fn cycle(&self) -> Option<Vec<String>> {
        let deps: BTreeMap<&str, Vec<&str>> = self
            .tasks
            .iter()
            .map(|t| {
                (
                    t.task_key.as_str(),
                    t.depends_on.iter().map(|d| d.task_key.as_str()).collect(),
                )
            })
            .collect();
        fn visit<'a>(
            node: &'a str,
            deps: &BTreeMap<&'a str, Vec<&'a str>>,
            done: &mut BTreeSet<&'a str>,
            path: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| *p == node) {
                let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            if !done.insert(node) {
                return None;
            }
            path.push(node);
            for d in deps.get(node).into_iter().flatten() {
                if let Some(c) = visit(d, deps, done, path) {
                    return Some(c);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        // In definition order, so that the cycle is reported from the first task in it.
        for t in &self.tasks {
            if let Some(c) = visit(&t.task_key, &deps, &mut done, &mut Vec::new()) {
                return Some(c);
            }
        }
        None
    }

    /// The Kafka topics the job's tasks use.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .tasks
            .iter()
            .filter_map(|t| match &t.kind {
                TaskKind::CsvToKafka(s) => Some(s.topic.clone()),
                TaskKind::KafkaToDelta(s) => Some(s.topic.clone()),
                _ => None,
            })
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The task keys in an order where each task comes after its dependencies.
    pub fn order(&self) -> Vec<&TaskDef> {
        let mut out: Vec<&TaskDef> = Vec::new();
        while out.len() < self.tasks.len() {
            let before = out.len();
            for t in &self.tasks {
                if out.iter().any(|o| o.task_key == t.task_key) {
                    continue;
                }
                if t.depends_on
                    .iter()
                    .all(|d| out.iter().any(|o| o.task_key == d.task_key))
                {
                    out.push(t);
                }
            }
            if out.len() == before {
                break; // a cycle: validation reports it
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> JobDef {
        serde_yaml::from_str(yaml).unwrap()
    }

    const TASKS: &str = r#"
name: j
tasks:
  - task_key: a
    csv_to_kafka: { topic: T, quarantine_table: quarantine.ingest }
  - task_key: b
    depends_on: [{ task_key: a }]
    kafka_to_delta: { topic: T, table: bronze.bronze, partition_by: year_month }
"#;

    #[test]
    fn a_good_job_has_no_problems() {
        let j = job(TASKS);
        assert!(j.problems().is_empty(), "{:?}", j.problems());
        assert_eq!(
            j.order()
                .iter()
                .map(|t| t.task_key.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(j.max_concurrent_runs, 1);
    }

    #[test]
    fn problems_point_at_their_paths() {
        let j = job(&TASKS.replace("task_key: a }", "task_key: x }"));
        assert_eq!(j.problems()[0].path, "tasks[1].depends_on[0].task_key");
        assert!(j.problems()[0].message.contains("depends on `x`"));

        let cyclic = TASKS.replace(
            "  - task_key: a\n",
            "  - task_key: a\n    depends_on: [{ task_key: b }]\n",
        );
        let p = job(&cyclic).problems();
        assert!(p[0].message.contains("cycle: a → b → a"), "{p:?}");

        let scheduled = format!("{TASKS}schedule: {{ quartz_cron_expression: '0 0 61 * * ?', timezone_id: Mars/Base }}\n");
        let p = job(&scheduled).problems();
        assert_eq!(p[0].path, "schedule.quartz_cron_expression");
        assert_eq!(p[1].path, "schedule.timezone_id");
    }

    #[test]
    fn a_line_break_in_an_email_address_is_a_problem() {
        let j = job(&format!(
            "{TASKS}email_notifications:\n  on_failure: [ok@example.com, \"a@example.com\\r\\nRCPT TO:<x@evil.com>\"]\n"
        ));
        let p = j.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "email_notifications.on_failure[1]");
        assert!(p[0].message.contains("line break"), "{p:?}");
    }

    #[test]
    fn quartz_expressions_parse() {
        for ok in [
            "0 0 6 * * ?",
            "*/1 * * * * ?",
            "0 30 9 ? * MON-FRI",
            "0 0 12 * * 2",
        ] {
            parse_cron(ok).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(parse_cron("0 0 25 * * ?").is_err());
    }
}
