//! Declarative pipelines in SQL, run through the real binary on real Delta tables: the
//! example bundle end to end, located errors at dry-run, expectations, refresh control,
//! schema changes and the event log.

mod common;

use common::pipelines::PipelineProject;

/// The weather example: JSON Lines (plain and .gz), two flows into one table, a temporary
/// view, a stream-static join, a warn-only and a DROP ROW expectation, and aggregate
/// materialized views. Every line of input is accounted for.
#[tokio::test(flavor = "multi_thread")]
async fn the_weather_example_runs_and_reruns_exactly_once() {
    let p = PipelineProject::example("weather");
    let dry = p.ok(&["pipeline", "dry-run"]);
    assert!(
        dry.contains("dev.weather.readings (streaming table)"),
        "{dry}"
    );
    assert!(
        !p.table("weather", "readings").exists(),
        "dry-run writes nothing"
    );

    let out = p.ok(&["pipeline", "run"]);
    // eu: 21 lines = 19 written + 1 dropped (no station) + 1 unparseable; us: 12.
    assert!(out.contains("flow readings_eu → dev.weather.readings: COMPLETED (21 read = 19 written + 1 dropped by expectations + 1 unparseable + 0 duplicates)"), "{out}");
    assert!(
        out.contains("flow readings_us → dev.weather.readings: COMPLETED (12 read = 12 written"),
        "{out}"
    );
    assert!(
        out.contains("expectation plausible_temperature: 19 passed, 1 failed"),
        "{out}"
    );
    assert_eq!(p.count("weather", "readings").await, 31);
    assert_eq!(p.count("weather", "readings_enriched").await, 31);
    assert_eq!(p.count("weather", "stations").await, 5);
    let daily = p
        .query(
            "weather",
            "daily_by_country",
            "SELECT country, count(*), sum(readings) FROM t GROUP BY country ORDER BY country",
        )
        .await;
    assert_eq!(
        daily,
        vec![
            vec!["CH".to_string(), "3".into(), "6".into()],
            vec!["NL".into(), "3".into(), "13".into()],
            vec!["US".into(), "3".into(), "12".into()],
        ]
    );
    // Quarantine: the line that is not JSON, and the reading without a station.
    let q = p
        .query(
            "quarantine",
            "readings",
            "SELECT flow, file, line, expectations, reason FROM t ORDER BY flow, reason",
        )
        .await;
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(
        q.iter()
            .any(|r| r[3] == "known_station"
                && r[4].contains("failed expectation(s): known_station")),
        "{q:?}"
    );
    assert!(
        q.iter().any(|r| r[1] == "2026-01-01.jsonl" && r[2] == "4"),
        "{q:?}"
    );

    // A second run reads nothing new and leaves every table as it was.
    let versions = |p: &PipelineProject| {
        [
            "readings",
            "readings_enriched",
            "stations",
            "daily_by_country",
        ]
        .map(|t| {
            std::fs::read_dir(p.table("weather", t).join("_delta_log"))
                .unwrap()
                .count()
        })
    };
    let before = versions(&p);
    let again = p.ok(&["pipeline", "run"]);
    assert!(
        again.contains("flow stations → dev.weather.stations: UP_TO_DATE"),
        "{again}"
    );
    assert_eq!(p.count("weather", "readings").await, 31);
    assert_eq!(
        versions(&p)[2..],
        before[2..],
        "views whose inputs did not change are left alone"
    );

    // A new file is read once, and the views follow.
    p.write_data(
        "readings/eu/2026-01-04.jsonl",
        b"{\"station\": \"EU003\", \"observed_at\": \"2026-01-04T00:00:00Z\", \"temp_c\": -4.5, \"humidity\": 0.9}\n",
    );
    p.ok(&["pipeline", "run"]);
    assert_eq!(p.count("weather", "readings").await, 32);
    assert_eq!(p.count("weather", "readings_enriched").await, 32);
    assert_eq!(p.count("weather", "daily_by_country").await, 10);

    // The event log has the updates, with the expectation metrics; `events` shows them.
    let events = p.ok(&["pipeline", "events"]);
    assert!(
        events.contains("flow_progress") && events.contains("update_progress"),
        "{events}"
    );
    let metrics = p
        .query("system", "events", "SELECT count(*) FROM t WHERE event_type = 'flow_progress' AND details LIKE '%plausible_temperature%'")
        .await;
    // Both flows of the first update, and readings_eu of the third, checked rows.
    assert_eq!(metrics[0][0], "3");
    // And every run is in job_runs.
    let runs = p.ok(&["runs"]);
    assert_eq!(runs.matches("pipeline weather").count(), 3, "{runs}");
}

/// Mistakes in the SQL are found at dry-run, located, with a fix, before any data moves.
#[test]
fn dry_run_locates_mistakes() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "CREATE MATERIALIZED VIEW a AS SELECT 1 AS x;\nCREATE MATERIALIZED VIEW b AS\n  SELECT y FROM a;\n",
            "q.sql:3:10",
            "y",
        ),
        (
            "CREATE MATERIALIZED VIEW a AS SELECT x FROM b;\nCREATE MATERIALIZED VIEW b AS SELECT x FROM a;\n",
            "q.sql:1:1",
            "cycle",
        ),
        (
            "CREATE MATERIALIZED VIEW a AS SELECT 1 AS x;\nCREATE FLOW f AS INSERT INTO a BY NAME SELECT 2 AS x;\n",
            "q.sql:2:",
            "materialized view",
        ),
        (
            "CREATE STREAMING TABLE s AS SELECT count(*) AS n FROM STREAM read_files('${data}/in', format => 'csv');\n",
            "q.sql:1:1",
            "aggregates",
        ),
        (
            "CREATE MATERIALIZED VIEW a AS SELECT 1 AS x;\nCREATE MATERIALIZED VIEW a AS SELECT 2 AS x;\n",
            "q.sql:2:1",
            "defined twice",
        ),
        ("CREATE TABLE t (x INT);\n", "q.sql:1:8", "CREATE STREAMING TABLE"),
        (
            "CREATE MATERIALIZED VIEW a AS SELECT * FROM nowhere.missing;\n",
            "q.sql:1:",
            "does not exist",
        ),
    ];
    for (sql, at, what) in cases {
        let p = PipelineProject::new(&[("q.sql", sql)]);
        p.write_data("in/a.csv", b"x\n1\n");
        let err = p.fails(&["pipeline", "dry-run"]);
        assert!(err.contains(at) && err.contains(what), "{sql}\n→ {err}");
        assert!(
            !p.root().join(".medallion/warehouse").exists(),
            "dry-run wrote data"
        );
    }
}

/// FAIL UPDATE stops the flow and its dependants, commits nothing for them, and names the
/// expectation and the row; other flows go on.
#[tokio::test(flavor = "multi_thread")]
async fn fail_update_stops_the_flow_and_its_dependants() {
    let p = PipelineProject::new(&[(
        "q.sql",
        "CREATE STREAMING TABLE orders (CONSTRAINT positive EXPECT (amount > 0) ON VIOLATION FAIL UPDATE)\n\
         AS SELECT id, CAST(amount AS DOUBLE) AS amount FROM STREAM read_files('${data}/orders', format => 'csv');\n\
         CREATE MATERIALIZED VIEW total AS SELECT sum(amount) AS s FROM orders;\n\
         CREATE MATERIALIZED VIEW other AS SELECT 1 AS one;\n",
    )]);
    p.write_data("orders/a.csv", b"id,amount\n1,10\n2,-5\n3,7\n");
    let err = p.fails(&["pipeline", "run"]);
    assert!(
        err.contains("expectation `positive`") && err.contains("\"id\":\"2\""),
        "{err}"
    );
    assert!(
        err.contains("flow total → dev.main.total: SKIPPED"),
        "{err}"
    );
    assert_eq!(p.count("main", "other").await, 1);
    assert_eq!(
        p.count("main", "orders").await,
        0,
        "nothing of the batch was committed"
    );
    assert!(!p.table("main", "total").exists());

    // The source is fixed (a new file; the bad one is moved away): the next run goes on.
    std::fs::remove_file(p.root().join("data/orders/a.csv")).unwrap();
    p.write_data("orders/b.csv", b"id,amount\n4,1\n");
    p.ok(&["pipeline", "run"]);
    assert_eq!(
        p.query("main", "total", "SELECT s FROM t").await[0][0],
        "1.0"
    );
}

/// `--refresh` runs only the named datasets; `--full-refresh T` recomputes T from the
/// beginning; a type change needs one, and a new nullable column does not.
#[tokio::test(flavor = "multi_thread")]
async fn refresh_full_refresh_and_schema_changes() {
    let p = PipelineProject::new(&[(
        "q.sql",
        "CREATE STREAMING TABLE raw AS SELECT id, v FROM STREAM read_files('${data}/in', format => 'csv');\n\
         CREATE MATERIALIZED VIEW n AS SELECT count(*) AS rows FROM raw;\n",
    )]);
    p.write_data("in/1.csv", b"id,v\n1,a\n2,b\n");
    p.ok(&["pipeline", "run"]);
    p.write_data("in/2.csv", b"id,v\n3,c\n");
    let out = p.ok(&["pipeline", "run", "--refresh", "raw"]);
    assert!(out.contains("flow n → dev.main.n: SKIPPED"), "{out}");
    assert_eq!(p.count("main", "raw").await, 3);
    assert_eq!(p.query("main", "n", "SELECT rows FROM t").await[0][0], "2");

    p.ok(&["pipeline", "run", "--full-refresh", "raw"]);
    assert_eq!(
        p.count("main", "raw").await,
        3,
        "recomputed from every file, once"
    );
    assert_eq!(p.query("main", "n", "SELECT rows FROM t").await[0][0], "3");

    // A new nullable column is added to the table.
    p.write_sql(
        "q.sql",
        "CREATE STREAMING TABLE raw AS SELECT id, v, upper(v) AS big FROM STREAM read_files('${data}/in', format => 'csv');\n",
    );
    p.write_data("in/3.csv", b"id,v\n4,d\n");
    p.ok(&["pipeline", "run"]);
    let rows = p
        .query("main", "raw", "SELECT id, big FROM t ORDER BY id")
        .await;
    assert_eq!(rows.last().unwrap(), &vec!["4".to_string(), "D".into()]);
    assert_eq!(rows[0][1], "NULL", "older rows have NULL in the new column");

    // A changed type is refused, with the way out.
    p.write_sql(
        "q.sql",
        "CREATE STREAMING TABLE raw AS SELECT CAST(id AS BIGINT) AS id, v FROM STREAM read_files('${data}/in', format => 'csv');\n",
    );
    p.write_data("in/4.csv", b"id,v\n5,e\n");
    let err = p.fails(&["pipeline", "run"]);
    assert!(
        err.contains("column `id` changes type") && err.contains("--full-refresh"),
        "{err}"
    );
    p.ok(&["pipeline", "run", "--full-refresh", "raw"]);
    assert_eq!(p.count("main", "raw").await, 5);
}

/// `graph` draws the datasets and what they read, as text, Mermaid and dot.
#[test]
fn graph_formats() {
    let p = PipelineProject::example("weather");
    let text = p.ok(&["pipeline", "graph"]);
    assert!(
        text.contains(
            "dev.weather.readings_enriched (streaming table)\n  <- dev.weather.readings_with_station\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("dev.weather.readings_with_station (temporary view)\n  <- STREAM dev.weather.readings\n  <- dev.weather.stations\n"),
        "{text}"
    );
    let mermaid = p.ok(&["pipeline", "graph", "--format", "mermaid"]);
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("==>"),
        "{mermaid}"
    );
    let dot = p.ok(&["pipeline", "graph", "--format", "dot"]);
    assert!(
        dot.contains(
            "\"dev.weather.readings\" -> \"dev.weather.readings_with_station\" [style=bold];"
        ),
        "{dot}"
    );
}

/// The fault-injection harness for pipeline flows: the weather example killed at each
/// point where a flow commits (its quarantine, its rows, a file's end), at its first and
/// a later hit, then run again, gives the same tables as a run never killed.
#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_killed_anywhere_and_rerun_gives_the_same_tables() {
    async fn tables(p: &PipelineProject) -> Vec<Vec<Vec<String>>> {
        let mut out = Vec::new();
        for (schema, table, sql) in [
            ("weather", "readings", "SELECT station, CAST(observed_at AS VARCHAR), temp_c, network FROM t ORDER BY 1, 2, 4"),
            ("weather", "readings_enriched", "SELECT station, CAST(observed_at AS VARCHAR), country FROM t ORDER BY 1, 2"),
            ("weather", "daily_by_country", "SELECT * FROM t ORDER BY 1, 2"),
            ("weather", "stations_history", "SELECT station, name, elevation_m, operator, CAST(\"__START_AT\" AS VARCHAR), CAST(\"__END_AT\" AS VARCHAR) FROM t ORDER BY 1, 5"),
            ("quarantine", "readings", "SELECT flow, file, line, raw, reason FROM t ORDER BY 1, 2, 3, 5"),
        ] {
            out.push(p.query(schema, table, sql).await);
        }
        out
    }
    let clean = PipelineProject::example("weather");
    clean.ok(&["pipeline", "run"]);
    let expected = tables(&clean).await;

    for point in [
        "pipeline.after_quarantine@1",
        "pipeline.after_commit@1",
        "pipeline.after_commit@3",
        "pipeline.file_done@1",
        "pipeline.file_done@2",
    ] {
        let p = PipelineProject::example("weather");
        p.killed_at(&["pipeline", "run"], point);
        p.ok(&["pipeline", "run"]);
        assert_eq!(tables(&p).await, expected, "after a kill at {point}");
    }

    // A run killed while it created a table leaves a log with no commit in it (the
    // staging file of the first commit): that table is not there yet, and is created.
    let p = PipelineProject::example("weather");
    let log = p.table("weather", "station_changes").join("_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join("00000000000000000000.json#1"), "").unwrap();
    p.ok(&["pipeline", "run"]);
    assert_eq!(
        tables(&p).await,
        expected,
        "after a kill while creating a table"
    );
}

/// A job's `pipeline_task` runs an update of the pipeline; the run is in `job_runs` and
/// the update in the event log, as for `pipeline run`.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_the_pipeline_as_a_task() {
    let p = PipelineProject::example("weather");
    let out = p.ok(&["run"]);
    assert!(out.contains("── refresh succeeded"), "{out}");
    assert!(
        out.contains("flow readings_eu → dev.weather.readings: COMPLETED"),
        "{out}"
    );
    assert_eq!(p.count("weather", "readings").await, 31);
    let runs = p.ok(&["runs"]);
    assert!(
        runs.contains("weather_job") && runs.contains("SUCCEEDED"),
        "{runs}"
    );
    let events = p.ok(&["pipeline", "events"]);
    assert!(events.contains("create_update"), "{events}");
    // The resolved bundle shows the pipeline; a task naming an unknown pipeline is refused.
    let validated = p.ok(&["bundle", "validate"]);
    assert!(
        validated.contains("pipelines:") && validated.contains("catalog: dev"),
        "{validated}"
    );
    let job = p.root().join("resources/weather_job.yml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace(
            "${resources.pipelines.weather.id}",
            "${resources.pipelines.wether.id}",
        ),
    )
    .unwrap();
    let err = p.fails(&["bundle", "validate"]);
    assert!(
        err.contains("weather_job.yml") && err.contains("resources.pipelines.wether.id"),
        "{err}"
    );
}

/// A stream-static join that matches a row more than once writes more rows than it read:
/// the summary counts them as added by the query, and the counts still reconcile.
#[tokio::test(flavor = "multi_thread")]
async fn a_join_that_fans_out_is_accounted_for() {
    let p = PipelineProject::new(&[(
        "q.sql",
        "CREATE MATERIALIZED VIEW tags AS SELECT id, tag FROM read_files('${data}/tags', format => 'csv');\n\
         CREATE STREAMING TABLE tagged AS SELECT o.id, o.v, t.tag\n\
         FROM STREAM read_files('${data}/orders', format => 'csv') o JOIN tags t ON o.id = t.id;\n",
    )]);
    p.write_data("tags/t.csv", b"id,tag\n1,a\n1,b\n2,c\n");
    p.write_data("orders/a.csv", b"id,v\n1,x\n2,y\n");
    let out = p.ok(&["pipeline", "run"]);
    assert!(
        out.contains("flow tagged → dev.main.tagged: COMPLETED (2 read = 3 written + 0 dropped by expectations + 0 unparseable + 0 duplicates - 1 added by the query)"),
        "{out}"
    );
    assert!(!out.contains("do not add up"), "{out}");
    assert_eq!(p.count("main", "tagged").await, 3);
}

/// A materialized view over files quarantines their lines that do not parse, with file
/// and line, and its quarantine holds what its latest refresh set aside.
#[tokio::test(flavor = "multi_thread")]
async fn a_materialized_view_quarantines_unparseable_lines_of_its_files() {
    let p = PipelineProject::new(&[(
        "q.sql",
        "CREATE MATERIALIZED VIEW ref AS SELECT id, CAST(n AS INT) AS n\n\
         FROM read_files('${data}/ref', format => 'csv', header => true, schema => 'id STRING, n INT');\n",
    )]);
    p.write_data("ref/a.csv", b"id,n\na,1\nb,2,extra\nc,3\n");
    let out = p.ok(&["pipeline", "run"]);
    assert!(
        out.contains("flow ref → dev.main.ref: COMPLETED (3 read = 2 written + 0 dropped by expectations + 1 unparseable"),
        "{out}"
    );
    assert_eq!(p.count("main", "ref").await, 2);
    assert_eq!(
        p.query("quarantine", "ref", "SELECT file, line, raw FROM t")
            .await,
        [["a.csv", "3", "b,2,extra"]]
    );
    // The file is fixed: the next refresh leaves nothing in quarantine.
    p.write_data("ref/a.csv", b"id,n\na,1\nb,2\nc,3\n");
    p.ok(&["pipeline", "run"]);
    assert_eq!(p.count("main", "ref").await, 3);
    assert_eq!(p.count("quarantine", "ref").await, 0);
}
