//! AUTO CDC flows through the real binary, on real Delta tables: a change feed in JSON
//! Lines, applied as SCD Type 2 however its events are split into runs and ordered.

mod common;

use common::pipelines::PipelineProject;

const SCD2: &str = "
CREATE OR REFRESH STREAMING TABLE changes AS
SELECT id, name, city, CAST(ts AS BIGINT) AS ts, op
FROM STREAM read_files('${data}/changes', format => 'json');

CREATE OR REFRESH STREAMING TABLE customers_history;

CREATE FLOW customers_scd2 AS AUTO CDC INTO customers_history
FROM STREAM(changes)
KEYS (id)
APPLY AS DELETE WHEN op = 'DELETE'
SEQUENCE BY ts
COLUMNS * EXCEPT (op)
STORED AS SCD TYPE 2
TRACK HISTORY ON * EXCEPT (city, ts);
";

/// The change events, numbered as the expected history below explains them.
fn event(n: usize) -> &'static str {
    [
        "",
        // 1: Ann arrives in Paris.
        r#"{"id": "1", "name": "Ann", "city": "Paris", "ts": "1", "op": "UPSERT"}"#,
        // 2: she moves to Lyon: city is not tracked, so version 1 is updated in place.
        r#"{"id": "1", "name": "Ann", "city": "Lyon", "ts": "2", "op": "UPSERT"}"#,
        // 3: her name changes: a new version from 4.
        r#"{"id": "1", "name": "Anna", "city": "Lyon", "ts": "4", "op": "UPSERT"}"#,
        // 4: Bob.
        r#"{"id": "2", "name": "Bob", "city": "Rome", "ts": "1", "op": "UPSERT"}"#,
        // 5: Bob is deleted at 3.
        r#"{"id": "2", "name": null, "city": null, "ts": "3", "op": "DELETE"}"#,
        // 6: and comes back at 5, unchanged: a new version all the same.
        r#"{"id": "2", "name": "Bob", "city": "Rome", "ts": "5", "op": "UPSERT"}"#,
        // 7: a correction at 3, between Ann and Anna.
        r#"{"id": "1", "name": "Annie", "city": "Lyon", "ts": "3", "op": "UPSERT"}"#,
    ][n]
}

/// The history every arrival order must give.
const HISTORY: &[&str] = &[
    "1|Ann|Lyon|2|1|3",
    "1|Annie|Lyon|3|3|4",
    "1|Anna|Lyon|4|4|NULL",
    "2|Bob|Rome|1|1|3",
    "2|Bob|Rome|5|5|NULL",
];

fn lines(events: &[usize]) -> Vec<u8> {
    events
        .iter()
        .map(|&n| format!("{}\n", event(n)))
        .collect::<String>()
        .into_bytes()
}

async fn history(p: &PipelineProject) -> Vec<String> {
    p.query(
        "main",
        "customers_history",
        "SELECT id, name, city, ts, \"__START_AT\", \"__END_AT\" FROM t ORDER BY id, \"__START_AT\"",
    )
    .await
    .into_iter()
    .map(|r| r.join("|"))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn scd2_gives_the_in_order_history_whatever_the_arrival_order() {
    // In order, in one run.
    let p = PipelineProject::new(&[("cdc.sql", SCD2)]);
    p.write_data("changes/a.json", &lines(&[1, 2, 3, 4, 5, 6, 7]));
    let out = p.ok(&["pipeline", "run"]);
    assert!(out.contains("customers_scd2"), "{out}");
    assert_eq!(history(&p).await, HISTORY);

    // Out of order, over three runs: deletes and returns before what they follow, and
    // the late correction last.
    let p = PipelineProject::new(&[("cdc.sql", SCD2)]);
    for (i, part) in [vec![3, 6], vec![5, 1], vec![4, 7, 2]].iter().enumerate() {
        p.write_data(&format!("changes/{i}.json"), &lines(part));
        p.ok(&["pipeline", "run"]);
    }
    assert_eq!(history(&p).await, HISTORY);

    // A rerun with nothing new changes nothing.
    let before = p.count("main", "customers_history").await;
    p.ok(&["pipeline", "run"]);
    assert_eq!(p.count("main", "customers_history").await, before);
    assert_eq!(history(&p).await, HISTORY);
}

/// A full refresh recomputes the history from the source as it is now: the events stored
/// for the earlier history are forgotten with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_refresh_forgets_the_stored_events() {
    let p = PipelineProject::new(&[("cdc.sql", SCD2)]);
    p.write_data("changes/a.json", &lines(&[1, 2, 3, 4, 5, 6, 7]));
    p.ok(&["pipeline", "run"]);
    assert_eq!(history(&p).await, HISTORY);

    // The landing folder now holds Anna's event and Bob's, and both tables are
    // recomputed: Ann and Annie were never.
    std::fs::remove_file(p.root().join("data/changes/a.json")).unwrap();
    p.write_data("changes/b.json", &lines(&[3, 4, 5, 6]));
    let after = [
        "1|Anna|Lyon|4|4|NULL",
        "2|Bob|Rome|1|1|3",
        "2|Bob|Rome|5|5|NULL",
    ];
    p.ok(&["pipeline", "run", "--full-refresh"]);
    assert_eq!(history(&p).await, after);

    // Recomputing the history alone, from the same source, gives it again.
    p.ok(&["pipeline", "run", "--full-refresh", "customers_history"]);
    assert_eq!(history(&p).await, after);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_without_a_key_or_a_sequence_are_quarantined_with_the_reason() {
    let p = PipelineProject::new(&[("cdc.sql", SCD2)]);
    let mut data = lines(&[1, 4]);
    data.extend_from_slice(
        b"{\"id\": null, \"name\": \"X\", \"city\": \"Y\", \"ts\": \"1\", \"op\": \"UPSERT\"}\n",
    );
    data.extend_from_slice(
        b"{\"id\": \"3\", \"name\": \"Z\", \"city\": \"Y\", \"ts\": null, \"op\": \"UPSERT\"}\n",
    );
    p.write_data("changes/a.json", &data);
    let out = p.ok(&["pipeline", "run"]);
    assert!(
        out.contains(
            "flow customers_scd2 → dev.main.customers_history: COMPLETED (4 read = 2 written"
        ),
        "{out}"
    );
    assert!(!out.contains("do not add up"), "{out}");
    assert_eq!(
        history(&p).await,
        ["1|Ann|Paris|1|1|NULL", "2|Bob|Rome|1|1|NULL"]
    );
    let q = p
        .query(
            "quarantine",
            "customers_history",
            "SELECT reason FROM t ORDER BY reason",
        )
        .await;
    assert_eq!(
        q,
        [
            vec!["AUTO CDC: the SEQUENCE BY value is NULL".to_string()],
            vec!["AUTO CDC: the key `id` is NULL".to_string()],
        ]
    );
}

#[test]
fn dry_run_locates_a_missing_key_and_an_unorderable_sequence() {
    let p = PipelineProject::new(&[("cdc.sql", &SCD2.replace("KEYS (id)", "KEYS (customer)"))]);
    p.write_data("changes/a.json", &lines(&[1]));
    let err = p.fails(&["pipeline", "dry-run"]);
    assert!(
        err.contains("cdc.sql:10:1") && err.contains("KEYS names `customer`"),
        "{err}"
    );
    let p = PipelineProject::new(&[(
        "cdc.sql",
        &SCD2.replace("SEQUENCE BY ts", "SEQUENCE BY make_array(ts)"),
    )]);
    p.write_data("changes/a.json", &lines(&[1]));
    let err = p.fails(&["pipeline", "dry-run"]);
    assert!(
        err.contains("cdc.sql:12:13") && err.contains("cannot be ordered"),
        "{err}"
    );
}

/// A project of `sql` run once per part of the events (written by `lines`), the run of
/// part `killed` first killed at `point`.
fn runs_killed_once(
    sql: &str,
    parts: &[Vec<usize>],
    lines: fn(&[usize]) -> Vec<u8>,
    point: &str,
    killed: usize,
) -> PipelineProject {
    let p = PipelineProject::new(&[("cdc.sql", sql)]);
    for (i, part) in parts.iter().enumerate() {
        p.write_data(&format!("changes/{i}.json"), &lines(part));
        if i == killed {
            p.killed_at(&["pipeline", "run"], point);
        }
        p.ok(&["pipeline", "run"]);
    }
    p
}

/// The fault-injection harness for AUTO CDC: a run killed after the events reached the
/// event store, before the history is written, with its rewritten files written but not
/// committed, or after the commit, in any of three runs, and run again, gives the
/// history of a run never killed, with every event stored once.
#[tokio::test(flavor = "multi_thread")]
async fn scd2_killed_anywhere_and_rerun_gives_the_same_history() {
    let parts = [vec![3, 6], vec![5, 1], vec![4, 7, 2]];
    for point in [
        "cdc.after_events",
        "cdc.before_merge",
        "delta.rewrite.before_commit",
        "pipeline.after_commit@2",
    ] {
        for killed in 0..parts.len() {
            // The first two runs only add versions; the third re-cuts Ann's first one,
            // so its file is rewritten.
            if point == "delta.rewrite.before_commit" && killed != 2 {
                continue;
            }
            let p = runs_killed_once(SCD2, &parts, lines, point, killed);
            assert_eq!(
                history(&p).await,
                HISTORY,
                "killed at {point} in run {killed}"
            );
            assert_eq!(
                p.count("main", "__apply_changes_storage_customers_history")
                    .await,
                7,
                "killed at {point} in run {killed}: each event is stored once"
            );
        }
    }
}

const SCD1: &str = "
CREATE OR REFRESH STREAMING TABLE changes AS
SELECT id, name, city, CAST(ts AS BIGINT) AS ts, op
FROM STREAM read_files('${data}/changes', format => 'json');

CREATE OR REFRESH STREAMING TABLE customers;

CREATE FLOW customers_scd1 AS AUTO CDC INTO customers
FROM STREAM(changes)
KEYS (id)
APPLY AS DELETE WHEN op = 'DELETE'
APPLY AS TRUNCATE WHEN op = 'TRUNCATE'
SEQUENCE BY ts
COLUMNS * EXCEPT (op)
STORED AS SCD TYPE 1;
";

/// Type 1 events: those of [`event`], then more.
fn event_1(n: usize) -> &'static str {
    match n {
        // 8: Cy.
        8 => r#"{"id": "3", "name": "Cy", "city": "Oslo", "ts": "2", "op": "UPSERT"}"#,
        // 9: deleted at 6.
        9 => r#"{"id": "3", "name": null, "city": null, "ts": "6", "op": "DELETE"}"#,
        // 10: an update older than the delete: ignored, Cy stays deleted.
        10 => r#"{"id": "3", "name": "Cy", "city": "Bergen", "ts": "5", "op": "UPSERT"}"#,
        // 11: a truncate at 5: what was applied below 5 (Anna, at 4) goes.
        11 => r#"{"id": null, "name": null, "city": null, "ts": "5", "op": "TRUNCATE"}"#,
        // 12: Dee, after it.
        12 => r#"{"id": "4", "name": "Dee", "city": "Kyiv", "ts": "7", "op": "UPSERT"}"#,
        // 13: an update of Ann below the truncate: ignored.
        13 => r#"{"id": "1", "name": "Old", "city": "Nice", "ts": "4", "op": "UPSERT"}"#,
        n => event(n),
    }
}

fn lines_1(events: &[usize]) -> Vec<u8> {
    events
        .iter()
        .map(|&n| format!("{}\n", event_1(n)))
        .collect::<String>()
        .into_bytes()
}

async fn customers(p: &PipelineProject) -> Vec<String> {
    p.query("main", "customers", "SELECT * FROM t ORDER BY id")
        .await
        .into_iter()
        .map(|r| r.join("|"))
        .collect()
}

/// Events 1 to 10: the highest sequence of each key.
const CUSTOMERS: &[&str] = &["1|Anna|Lyon|4", "2|Bob|Rome|5"];
/// With 11 to 13: after the truncate at 5.
const TRUNCATED: &[&str] = &["2|Bob|Rome|5", "4|Dee|Kyiv|7"];

#[tokio::test(flavor = "multi_thread")]
async fn scd1_keeps_the_highest_sequence_whatever_the_arrival_order() {
    let p = PipelineProject::new(&[("cdc.sql", SCD1)]);
    p.write_data("changes/a.json", &lines_1(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    let out = p.ok(&["pipeline", "run"]);
    assert!(out.contains("2 event(s) ignored as older"), "{out}");
    assert_eq!(customers(&p).await, CUSTOMERS);
    p.write_data("changes/b.json", &lines_1(&[11, 12, 13]));
    p.ok(&["pipeline", "run"]);
    assert_eq!(customers(&p).await, TRUNCATED);

    // Out of order, over four runs: the delete of Cy before its insert and its late
    // update, Bob's return before his delete, the truncate before what it sweeps.
    let p = PipelineProject::new(&[("cdc.sql", SCD1)]);
    for (i, part) in [vec![9, 3, 6], vec![10, 5, 1, 8], vec![4, 7, 2]]
        .iter()
        .enumerate()
    {
        p.write_data(&format!("changes/{i}.json"), &lines_1(part));
        p.ok(&["pipeline", "run"]);
    }
    assert_eq!(customers(&p).await, CUSTOMERS);
    p.write_data("changes/3.json", &lines_1(&[13, 11]));
    p.ok(&["pipeline", "run"]);
    p.write_data("changes/4.json", &lines_1(&[12]));
    p.ok(&["pipeline", "run"]);
    assert_eq!(customers(&p).await, TRUNCATED);
    // Nothing new: nothing changes.
    p.ok(&["pipeline", "run"]);
    assert_eq!(customers(&p).await, TRUNCATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn scd1_ignore_null_updates_keeps_stored_values_and_tombstones_are_collected() {
    let sql = SCD1
        .replace("KEYS (id)", "KEYS (id)\nIGNORE NULL UPDATES")
        .replace(
            "CREATE OR REFRESH STREAMING TABLE customers;",
            "CREATE OR REFRESH STREAMING TABLE customers\nTBLPROPERTIES ('pipelines.cdc.tombstoneGCThresholdInSeconds' = '0');",
        );
    let p = PipelineProject::new(&[("cdc.sql", &sql)]);
    let mut data = lines_1(&[1, 8, 9]);
    data.extend_from_slice(
        b"{\"id\": \"1\", \"name\": null, \"city\": \"Metz\", \"ts\": \"9\", \"op\": \"UPSERT\"}\n",
    );
    p.write_data("changes/a.json", &data);
    let out = p.ok(&["pipeline", "run"]);
    assert_eq!(customers(&p).await, ["1|Ann|Metz|9"]);
    // Cy's tombstone is older than 0 s: collected at the end of the run.
    assert!(
        out.contains("1 tombstone(s) older than 0 s collected"),
        "{out}"
    );
    assert_eq!(
        p.count("main", "__apply_changes_storage_customers").await,
        1
    );
    // Without it, an event older than the delete brings Cy back (as in DLT).
    p.write_data("changes/b.json", &lines_1(&[10]));
    p.ok(&["pipeline", "run"]);
    assert_eq!(customers(&p).await, ["1|Ann|Metz|9", "3|Cy|Bergen|5"]);
}

/// The fault-injection harness for Type 1: killed after the truncate's sweep, after
/// the store's write, before or after the target's, in any of four runs, and run again.
#[tokio::test(flavor = "multi_thread")]
async fn scd1_killed_anywhere_and_rerun_gives_the_same_table() {
    let parts = [
        vec![9, 3, 6],
        vec![10, 5, 1, 8],
        vec![4, 7, 2, 13, 11],
        vec![12],
    ];
    for point in [
        "cdc.after_truncate",
        "cdc.after_events",
        "cdc.before_merge",
        "pipeline.after_commit@2",
    ] {
        for killed in 0..parts.len() {
            if point == "cdc.after_truncate" && killed != 2 {
                continue;
            }
            let p = runs_killed_once(SCD1, &parts, lines_1, point, killed);
            assert_eq!(
                customers(&p).await,
                TRUNCATED,
                "killed at {point} in run {killed}"
            );
            // Bob, Cy's tombstone, Dee, and the truncate.
            assert_eq!(
                p.count("main", "__apply_changes_storage_customers").await,
                4,
                "killed at {point} in run {killed}"
            );
        }
    }
}

// `examples/weather`'s station change feed (`data/station_changes/*.jsonl`, 14 events):
// inserts, updates, a change of `operator` alone (not tracked), deletes (EU004 for good,
// US002 back at 01-03 06:00 with the values of the version its delete closed), and late
// events in the last file, older than events already read for their station (EU001 at
// 01-01 12:00, US002 at 01-02 09:30).

/// `stations_history` as the example's files give it: station, name, country,
/// elevation_m, operator, __START_AT, __END_AT (month-day hour:minute, 2026).
const STATIONS_HISTORY: &[&str] = &[
    "EU001|Amsterdam, Schiphol|NL|-3|KNMI|01-01 00:00|01-01 12:00",
    "EU001|Amsterdam Airport Schiphol|NL|-3|KNMI|01-01 12:00|01-02 08:00",
    "EU001|Amsterdam Airport Schiphol|NL|-4|KNMI|01-02 08:00|NULL",
    "EU002|De Bilt|NL|2|Vaisala|01-01 00:00|NULL",
    "EU003|Zürich Fluntern|CH|556|MeteoSwiss|01-01 00:00|01-03 12:00",
    "EU003|Zürich / Fluntern|CH|555|MeteoSwiss|01-03 12:00|NULL",
    "EU004|Rotterdam|NL|-4|KNMI|01-02 12:00|01-03 09:00",
    "US001|New York, Central Park|US|42|NWS|01-01 00:00|NULL",
    "US002|Denver|US|1611|NWS|01-01 00:00|01-02 09:30",
    "US002|Denver|US|1609|NWS|01-02 09:30|01-02 10:00",
    "US002|Denver|US|1609|NWS|01-03 06:00|NULL",
];

/// A file of events that arrives after the first run: a late elevation correction of
/// EU003 (between its two versions), a late change of the operator of EU004 (before its
/// delete) and a change of US001's operator that is not late.
const LATE_STATION_CHANGES: &str = r#"{"station": "EU003", "name": "Zürich Fluntern", "country": "CH", "elevation_m": 555, "operator": "MeteoSwiss", "op": "U", "changed_at": "2026-01-02T15:00:00Z"}
{"station": "EU004", "name": "Rotterdam", "country": "NL", "elevation_m": -4, "operator": "Rijkswaterstaat", "op": "U", "changed_at": "2026-01-02T18:00:00Z"}
{"station": "US001", "name": "New York, Central Park", "country": "US", "elevation_m": 42, "operator": "NOAA", "op": "U", "changed_at": "2026-01-04T00:00:00Z"}
"#;

/// `stations_history` after the late file: EU003's first version is cut at 01-02 15:00,
/// EU004's closed version and US001's open one get their new operator in place.
const STATIONS_HISTORY_AFTER_LATE: &[&str] = &[
    "EU001|Amsterdam, Schiphol|NL|-3|KNMI|01-01 00:00|01-01 12:00",
    "EU001|Amsterdam Airport Schiphol|NL|-3|KNMI|01-01 12:00|01-02 08:00",
    "EU001|Amsterdam Airport Schiphol|NL|-4|KNMI|01-02 08:00|NULL",
    "EU002|De Bilt|NL|2|Vaisala|01-01 00:00|NULL",
    "EU003|Zürich Fluntern|CH|556|MeteoSwiss|01-01 00:00|01-02 15:00",
    "EU003|Zürich Fluntern|CH|555|MeteoSwiss|01-02 15:00|01-03 12:00",
    "EU003|Zürich / Fluntern|CH|555|MeteoSwiss|01-03 12:00|NULL",
    "EU004|Rotterdam|NL|-4|Rijkswaterstaat|01-02 12:00|01-03 09:00",
    "US001|New York, Central Park|US|42|NOAA|01-01 00:00|NULL",
    "US002|Denver|US|1611|NWS|01-01 00:00|01-02 09:30",
    "US002|Denver|US|1609|NWS|01-02 09:30|01-02 10:00",
    "US002|Denver|US|1609|NWS|01-03 06:00|NULL",
];

/// `stations_current` as the example's files give it: station, name, country,
/// elevation_m, operator, changed_at. The late events lost to newer ones; EU004 is
/// deleted; US002 is back.
const STATIONS_CURRENT: &[&str] = &[
    "EU001|Amsterdam Airport Schiphol|NL|-4|KNMI|01-02 08:00",
    "EU002|De Bilt|NL|2|Vaisala|01-02 09:00",
    "EU003|Zürich / Fluntern|CH|555|MeteoSwiss|01-03 12:00",
    "US001|New York, Central Park|US|42|NWS|01-01 00:00",
    "US002|Denver|US|1609|NWS|01-03 06:00",
];

/// `stations_current` after the late file: only US001's change is newer than what its
/// station holds; EU004's event is older than its delete, so it stays deleted.
const STATIONS_CURRENT_AFTER_LATE: &[&str] = &[
    "EU001|Amsterdam Airport Schiphol|NL|-4|KNMI|01-02 08:00",
    "EU002|De Bilt|NL|2|Vaisala|01-02 09:00",
    "EU003|Zürich / Fluntern|CH|555|MeteoSwiss|01-03 12:00",
    "US001|New York, Central Park|US|42|NOAA|01-04 00:00",
    "US002|Denver|US|1609|NWS|01-03 06:00",
];

async fn stations_history(p: &PipelineProject) -> Vec<String> {
    p.query(
        "weather",
        "stations_history",
        "SELECT station, name, country, elevation_m, operator, \
         to_char(\"__START_AT\", '%m-%d %H:%M'), to_char(\"__END_AT\", '%m-%d %H:%M') \
         FROM t ORDER BY station, \"__START_AT\"",
    )
    .await
    .into_iter()
    .map(|r| r.join("|"))
    .collect()
}

async fn stations_current(p: &PipelineProject) -> Vec<String> {
    p.query(
        "weather",
        "stations_current",
        "SELECT station, name, country, elevation_m, operator, to_char(changed_at, '%m-%d %H:%M') \
         FROM t ORDER BY station",
    )
    .await
    .into_iter()
    .map(|r| r.join("|"))
    .collect()
}

/// The number of commits of a table of the weather example.
fn commits(p: &PipelineProject, table: &str) -> usize {
    std::fs::read_dir(p.table("weather", table).join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count()
}

/// The weather example's SCD Type 2 flow: the history of each station from its change
/// feed, late events placed by their sequence; a run with nothing new changes nothing; a
/// late file read by a later run re-cuts the versions around its events.
#[tokio::test(flavor = "multi_thread")]
async fn the_weather_example_keeps_the_history_of_each_station() {
    let p = PipelineProject::example("weather");
    let out = p.ok(&["pipeline", "run"]);
    assert!(
        out.contains(
            "flow station_changes → dev.weather.station_changes: COMPLETED (14 read = 14 written"
        ),
        "{out}"
    );
    assert!(
        out.contains("flow stations_scd2 → dev.weather.stations_history: COMPLETED"),
        "{out}"
    );
    assert_eq!(stations_history(&p).await, STATIONS_HISTORY);

    // A second run reads nothing new and writes nothing.
    let before = commits(&p, "stations_history");
    p.ok(&["pipeline", "run"]);
    assert_eq!(commits(&p, "stations_history"), before);
    assert_eq!(stations_history(&p).await, STATIONS_HISTORY);

    // A late file: its events are placed by their sequence.
    p.write_data(
        "station_changes/2026-01-04.jsonl",
        LATE_STATION_CHANGES.as_bytes(),
    );
    p.ok(&["pipeline", "run"]);
    assert_eq!(stations_history(&p).await, STATIONS_HISTORY_AFTER_LATE);
    assert_eq!(
        p.count("weather", "__apply_changes_storage_stations_history")
            .await,
        17,
        "every event is kept once"
    );
}

/// The weather example's SCD Type 1 flow (`station_changes_type1.sql`): one row per live
/// station, the newest event wins, late events are ignored, deleted stations are absent.
#[tokio::test(flavor = "multi_thread")]
async fn the_weather_example_keeps_the_current_row_of_each_station() {
    let p = PipelineProject::example("weather");
    let out = p.ok(&["pipeline", "run"]);
    assert!(
        out.contains("flow stations_scd1 → dev.weather.stations_current: COMPLETED"),
        "{out}"
    );
    assert_eq!(stations_current(&p).await, STATIONS_CURRENT);
    assert_eq!(stations_history(&p).await, STATIONS_HISTORY);

    // A second run reads nothing new and writes nothing.
    let before = commits(&p, "stations_current");
    p.ok(&["pipeline", "run"]);
    assert_eq!(commits(&p, "stations_current"), before);
    assert_eq!(stations_current(&p).await, STATIONS_CURRENT);

    // A late file: the events older than what their station holds are ignored.
    p.write_data(
        "station_changes/2026-01-04.jsonl",
        LATE_STATION_CHANGES.as_bytes(),
    );
    p.ok(&["pipeline", "run"]);
    assert_eq!(stations_current(&p).await, STATIONS_CURRENT_AFTER_LATE);
    assert_eq!(stations_history(&p).await, STATIONS_HISTORY_AFTER_LATE);
}

/// Type 1 in place: the second run updates Ann and deletes Bob, so the files of the
/// store and of the target that hold them are rewritten. Killed with the store's new
/// files written but not committed, or the target's, and run again, it gives the table
/// of a run never killed.
#[tokio::test(flavor = "multi_thread")]
async fn scd1_killed_in_a_rewrite_and_rerun_gives_the_same_table() {
    let parts = [vec![1, 4], vec![2, 5]];
    for point in [
        "delta.rewrite.before_commit",
        "delta.rewrite.before_commit@2",
    ] {
        let p = runs_killed_once(SCD1, &parts, lines_1, point, 1);
        assert_eq!(customers(&p).await, ["1|Ann|Lyon|2"], "killed at {point}");
        // Ann, and Bob's tombstone.
        assert_eq!(
            p.count("main", "__apply_changes_storage_customers").await,
            2,
            "killed at {point}"
        );
    }
}
