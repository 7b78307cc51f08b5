//! `medallion ui` over the stock pipeline: its JSON API, its token, and the pages in a
//! real headless Chromium (Debian's chromium and chromium-driver, through WebDriver).

mod common;
#[path = "common/ui.rs"]
mod ui;

use std::collections::BTreeSet;

use common::{csv, small, Workspace};
use fantoccini::Locator;
use medallion::catalog::TableName;
use ui::{Browser, UiServer};

/// A workspace where the stock job ran once on generated files, plus one file with rows
/// that the Silver expectations quarantine.
fn stock_run() -> Workspace {
    let w = Workspace::new();
    w.generate(small(1_500, 2, 11));
    w.land(
        "zz_bad.csv",
        &csv(&[
            "NYA,2031-02-30,1,2,3,4,5,6",
            "NYA,not a date,1,2,3,4,5,6",
            "HSI,2031-01-02,1,2,3,4,4,7",
        ]),
    );
    w.medallion_ok(&["run"]);
    w
}

/// The job's tables: every table of the catalog but the system and quarantine ones, and
/// the internal ones (`__…`, such as an AUTO CDC flow's event store).
fn job_tables(w: &Workspace) -> BTreeSet<TableName> {
    let catalog = w.settings().warehouse.catalog_path();
    let mut out = BTreeSet::new();
    for schema in std::fs::read_dir(&catalog).unwrap().flatten() {
        let s = schema.file_name().to_string_lossy().to_string();
        if s == "system" || s == "quarantine" {
            continue;
        }
        for table in std::fs::read_dir(schema.path()).unwrap().flatten() {
            let t = table.file_name().to_string_lossy().to_string();
            if !t.starts_with("__") {
                out.insert(TableName::new(&s, t));
            }
        }
    }
    out
}

/// `1,234,567`, as the page writes counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_for_the_stock_pipeline() {
    let w = stock_run();
    let server = UiServer::start(w.root(), &[], &[]);
    let stocks = TableName::new("silver", "stocks_silver");
    let stocks_rows = w.count(&stocks).await;

    let (status, overview) = server.get("/api/overview").await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["target"], "dev");
    assert_eq!(
        overview["run"],
        serde_json::Value::Null,
        "no run holds the lock"
    );

    // Every table of the job is a node of the graph, with its row count.
    let (_, graph) = server.get("/api/graph").await;
    for table in job_tables(&w) {
        let node = graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["table"] == table.to_string())
            .unwrap_or_else(|| panic!("{table} is not in the graph: {graph}"));
        assert_eq!(node["rows"].as_u64(), Some(w.count(&table).await), "{node}");
        assert_eq!(node["state"], "succeeded", "{node}");
    }

    let (_, list) = server.get("/api/tables").await;
    let listed = list["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "silver.stocks_silver")
        .expect("listed");
    assert_eq!(listed["rows"].as_u64(), Some(stocks_rows));

    let (status, table) = server.get("/api/tables/silver.stocks_silver").await;
    assert_eq!(status, 200, "{table}");
    assert_eq!(table["kind"], "streaming table");
    assert_eq!(table["quarantine"], "quarantine.stocks_silver");
    assert!(table["schema"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "Close"));

    let (_, history) = server.get("/api/tables/silver.stocks_silver/history").await;
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions[0]["version"], table["version"]);
    assert!(
        versions
            .iter()
            .any(|v| !v["txns"].as_array().unwrap().is_empty()),
        "the progress txns are in the history: {history}"
    );

    let (_, rows) = server
        .get("/api/tables/silver.stocks_silver/rows?offset=3&limit=5")
        .await;
    assert_eq!(rows["rows"].as_array().unwrap().len(), 5, "{rows}");
    assert_eq!(rows["total"].as_u64(), Some(stocks_rows));

    // Time travel: the rows at an earlier version, and a version the table never had.
    let (_, first) = server
        .get("/api/tables/silver.stocks_silver/rows?version=0")
        .await;
    assert_eq!(
        (first["total"].as_u64(), first["version"].as_i64()),
        (Some(0), Some(0)),
        "{first}"
    );
    let (status, unknown) = server
        .get("/api/tables/silver.stocks_silver/rows?version=999")
        .await;
    assert_eq!(status, 404, "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("has no version 999"),
        "{unknown}"
    );

    let (_, runs) = server.get("/api/runs").await;
    assert_eq!(runs["total"], 1, "{runs}");
    assert_eq!(runs["runs"][0]["state"], "SUCCEEDED");
    assert!(runs["runs"][0]["tasks"].as_array().unwrap().len() >= 3);

    let (_, updates) = server.get("/api/updates").await;
    assert_eq!(updates["updates"][0]["state"], "COMPLETED", "{updates}");
    let flows = updates["updates"][0]["flows"].as_array().unwrap();
    assert!(flows.iter().any(|f| f["flow"] == "stocks_silver"));

    let (_, expectations) = server
        .get("/api/tables/silver.stocks_silver/expectations")
        .await;
    let measured = &expectations["updates"][0]["expectations"];
    assert!(
        measured.as_array().is_some_and(|e| !e.is_empty()),
        "{expectations}"
    );

    let (_, quarantine) = server
        .get("/api/tables/silver.stocks_silver/quarantine?samples=2")
        .await;
    let reasons = quarantine["reasons"].as_array().unwrap();
    assert!(!reasons.is_empty(), "{quarantine}");
    assert!(!reasons[0]["samples"].as_array().unwrap().is_empty());

    let (_, metrics) = server.get("/api/metrics").await;
    assert!(
        !metrics["throughput"].as_array().unwrap().is_empty(),
        "{metrics}"
    );
    assert!(
        !metrics["freshness"].as_array().unwrap().is_empty(),
        "{metrics}"
    );

    // SQL: a result, a huge one cut at the limit, a malformed query, a write.
    let (status, result) = server
        .sql("SELECT count(*) AS n FROM silver.stocks_silver")
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["rows"][0][0], stocks_rows.to_string());
    let (_, huge) = server.sql("SELECT * FROM range(1000000)").await;
    assert_eq!(huge["truncated"], true, "{huge}");
    assert_eq!(huge["rows"].as_array().unwrap().len(), 1_000);
    let (status, bad) = server.sql("SELEC 1").await;
    assert_eq!(status, 400, "{bad}");
    let (status, write) = server.sql("DROP TABLE silver.stocks_silver").await;
    assert_eq!(status, 400, "{write}");
    assert!(
        write["error"].as_str().unwrap().contains("read-only"),
        "{write}"
    );
    assert_eq!(w.count(&stocks).await, stocks_rows, "nothing was written");

    // Unknown tables, versions past the end, and API paths get clear messages.
    let (status, unknown) = server.get("/api/tables/silver.nope").await;
    assert_eq!(status, 404, "{unknown}");
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("its tables are"));
    let (status, past) = server
        .get("/api/tables/silver.stocks_silver/history?offset=100000")
        .await;
    assert_eq!(status, 200);
    assert!(past["versions"].as_array().unwrap().is_empty());
    let (status, _) = server.get("/api/nothing").await;
    assert_eq!(status, 404);

    // The live stream says `change` at once.
    let response = reqwest::get(format!("{}/api/live", server.url))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let mut response = response;
    let first = response.chunk().await.unwrap().expect("a first event");
    assert!(
        String::from_utf8_lossy(&first).contains("event: change"),
        "{first:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_address_needs_a_token() {
    let w = Workspace::new();
    let out = w.medallion(&["ui", "--host", "0.0.0.0", "--port", "0"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without a token"), "{err}");

    // The token given through the environment.
    let secret = "s3cret-ui-token";
    let mut server = UiServer::start(
        w.root(),
        &["--host", "0.0.0.0"],
        &[("MEDALLION_UI_TOKEN", secret)],
    );
    server.url = server.url.replace("0.0.0.0", "127.0.0.1");
    let (status, refused) = server.get("/api/overview").await;
    assert_eq!(status, 401, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("token"));
    let (status, _) = server
        .send(
            reqwest::Client::new()
                .get(format!("{}/api/overview", server.url))
                .bearer_auth("wrong"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, ok) = server
        .send(
            reqwest::Client::new()
                .get(format!("{}/api/overview", server.url))
                .bearer_auth(secret),
        )
        .await;
    assert_eq!(status, 200, "{ok}");
    let (status, _) = server.get(&format!("/api/overview?token={secret}")).await;
    assert_eq!(status, 200);
    // The page itself loads, and asks for the token.
    let page = reqwest::get(format!("{}/", server.url)).await.unwrap();
    assert_eq!(page.status(), 200);
}

/// Types `query` into the SQL box and runs it.
async fn run_query(browser: &Browser, query: &str) {
    // The box is filled with an example once the tables are listed.
    browser.wait_for(".sql-table").await;
    let sql = browser.wait_for("#sql").await;
    sql.clear().await.unwrap();
    sql.send_keys(query).await.unwrap();
    browser.wait_for("#run-sql").await.click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pages_in_a_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let w = stock_run();
    let server = UiServer::start(w.root(), &[], &[]);
    let c = &browser.client;

    // The graph: every table of the job is a node, with its row count.
    c.goto(&format!("{}/#/graph", server.url)).await.unwrap();
    browser
        .wait_for("g.node[data-table='silver.stocks_silver']")
        .await;
    for table in job_tables(&w) {
        let rows = w.count(&table).await;
        let node = browser
            .wait_for(&format!("g.node[data-table='{table}']"))
            .await;
        assert_eq!(
            node.attr("data-rows").await.unwrap().as_deref(),
            Some(rows.to_string().as_str()),
            "{table}"
        );
        let text = node.text().await.unwrap();
        assert!(text.contains(&thousands(rows)), "{table}: {text:?}");
        assert_eq!(
            node.attr("data-state").await.unwrap().as_deref(),
            Some("succeeded"),
            "{table}"
        );
    }
    browser.screenshot("graph").await;
    // The whole graph at full scale, as README's docs/ui-graph.png shows it.
    c.set_window_size(2300, 760).await.unwrap();
    browser.screenshot("graph-wide").await;
    c.set_window_size(1440, 960).await.unwrap();

    // A node opens its table: its rows, and its quarantine by reason with samples.
    browser
        .wait_for("g.node[data-table='silver.stocks_silver']")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("#rows tbody tr").await;
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .ends_with("#/table/silver.stocks_silver"));
    let shown = c.find_all(Locator::Css("#rows tbody tr")).await.unwrap();
    assert_eq!(
        shown.len() as u64,
        w.count(&TableName::new("silver", "stocks_silver"))
            .await
            .min(50)
    );
    browser.screenshot("table").await;
    // A version of the history shows the rows the table had then (none at its creation).
    browser
        .wait_for(".version-link[data-version='0']")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("#rows-latest").await;
    assert!(c
        .find_all(Locator::Css("#rows tbody tr"))
        .await
        .unwrap()
        .is_empty());
    browser.wait_for(".reason").await.click().await.unwrap();
    browser.wait_for(".samples tr").await;
    browser.screenshot("quarantine").await;

    // The SQL box runs a query, and refuses a write with a message.
    c.goto(&format!("{}/#/sql", server.url)).await.unwrap();
    run_query(
        &browser,
        "SELECT \"Index\", count(*) AS days FROM silver.stocks_silver GROUP BY 1 ORDER BY 1",
    )
    .await;
    let result = browser.wait_for("#sql-result table").await;
    assert!(result.text().await.unwrap().contains("NYA"));
    browser.screenshot("sql").await;
    run_query(&browser, "DELETE FROM silver.stocks_silver").await;
    let error = browser.wait_for("#sql-error").await;
    assert!(error.text().await.unwrap().contains("read-only"));

    c.goto(&format!("{}/#/charts", server.url)).await.unwrap();
    browser.wait_for(".uplot").await;
    browser.screenshot("charts").await;

    // An injected failure: the data files of stocks_close_silver are lost, so the next
    // run's gold materialized view, which reads it whole, fails. The open graph marks it
    // without a reload.
    c.goto(&format!("{}/#/graph", server.url)).await.unwrap();
    browser.wait_for("g.node[data-state='succeeded']").await;
    let dir = w
        .settings()
        .warehouse
        .path(&TableName::new("silver", "stocks_close_silver"));
    for file in walkdir::WalkDir::new(&dir).into_iter().flatten() {
        if file.path().extension().is_some_and(|e| e == "parquet") {
            std::fs::remove_file(file.path()).unwrap();
        }
    }
    w.generate(common::GenerateOptions {
        prefix: "later".into(),
        start: chrono::NaiveDate::from_ymd_opt(2032, 1, 5).unwrap(),
        ..small(300, 1, 12)
    });
    let out = w.medallion(&["run"], &[]);
    assert!(!out.status.success(), "the run fails");
    browser
        .wait_for("g.node[data-table='gold.updated_stocks_gold'][data-state='failed']")
        .await;
    browser.screenshot("graph-failed").await;
    c.goto(&format!("{}/#/runs", server.url)).await.unwrap();
    browser.wait_for(".update[data-state='FAILED']").await;
    browser
        .wait_for(".flow[data-flow='updated_stocks_gold'][data-state='FAILED']")
        .await;
    browser.wait_for(".run[data-state='FAILED']").await;
    browser.screenshot("runs").await;
    browser.close().await;
}
