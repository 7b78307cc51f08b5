//! `medallion ui`: a local, read-only web application over one target: the graph of its
//! pipelines and jobs, their runs and updates, every table (schema, history, rows,
//! expectations, quarantine), a read-only SQL box and throughput and freshness charts.
//!
//! One process serves the page (embedded, [`assets`]) and a JSON API ([`api`]) that reads
//! the tables and logs only: the UI takes no lock and writes nothing, so it works beside
//! any run, and stays live through server-sent events ([`live`]).
//!
//! It binds to loopback. Another address needs a token, which every API request then
//! carries (`Authorization: Bearer …`, or `?token=` for the event stream).

pub mod api;
mod assets;
mod freshness;
mod graph;
pub mod live;
mod runs;
pub mod tables;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::bundle::Settings;

/// How `medallion ui` serves.
#[derive(Debug, Clone)]
pub struct UiOptions {
    pub host: String,
    pub port: u16,
    /// The access token; required when `host` is not a loopback address.
    pub token: Option<String>,
}

/// Errors starting the UI.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("refusing to serve on {host} without a token: anyone who can reach this machine could read every table of the target. Pass --token (or set MEDALLION_UI_TOKEN), or keep the default --host 127.0.0.1")]
    NeedsToken { host: String },
    #[error("--host `{host}` is not an IP address. Use 127.0.0.1 (the default), ::1, 0.0.0.0 or an address of this machine")]
    BadHost { host: String },
    #[error("cannot listen on {addr}: {source}. Choose another --port (0 picks a free one), or stop what uses it")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the UI server stopped: {0}")]
    Serve(std::io::Error),
}

/// The address to bind, refused when it is not loopback and there is no token.
pub fn bind_address(options: &UiOptions) -> Result<SocketAddr, UiError> {
    let ip: IpAddr = match options.host.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        host => host.parse().map_err(|_| UiError::BadHost {
            host: options.host.clone(),
        })?,
    };
    if !ip.is_loopback() && options.token.as_deref().is_none_or(str::is_empty) {
        return Err(UiError::NeedsToken {
            host: options.host.clone(),
        });
    }
    Ok(SocketAddr::new(ip, options.port))
}

/// The UI's routes: the page and its files, and the API behind the token check.
pub fn router(ui: Arc<api::Ui>, token: Option<String>) -> Router {
    let api = Router::new()
        .route("/overview", get(api::overview))
        .route("/graph", get(api::graph))
        .route("/runs", get(api::job_runs))
        .route("/updates", get(api::updates))
        .route("/tables", get(api::table_list))
        .route("/tables/{name}", get(api::table))
        .route("/tables/{name}/history", get(api::history))
        .route("/tables/{name}/rows", get(api::rows))
        .route("/tables/{name}/expectations", get(api::expectations))
        .route("/tables/{name}/quarantine", get(api::quarantine))
        .route("/sql", post(api::sql))
        .route("/metrics", get(api::metrics))
        .route("/live", get(api::live))
        .fallback(api::unknown_api)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .with_state(ui);
    Router::new()
        .route("/", get(assets::index))
        .route("/{file}", get(assets::file))
        .route("/vendor/{file}", get(assets::vendor))
        .nest("/api", api)
}

/// Refuses an API request without the token, when the UI has one.
async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token.as_deref() else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let query = request.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let given = header.or(query).unwrap_or_default();
    if same(given.as_bytes(), token.as_bytes()) {
        next.run(request).await
    } else {
        api::ApiError::Unauthorized.into_response()
    }
}

/// Compares in time that does not depend on where the texts differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the UI of `settings`' target until Ctrl-C; `ready` gets the address once it
/// listens (port 0 picks a free one).
pub async fn serve(
    settings: Settings,
    options: UiOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), UiError> {
    let addr = bind_address(&options)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| UiError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| UiError::Bind { addr, source })?;
    ready(bound);
    let app = router(Arc::new(api::Ui::new(settings)), options.token);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(UiError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(host: &str, token: Option<&str>) -> UiOptions {
        UiOptions {
            host: host.into(),
            port: 8787,
            token: token.map(String::from),
        }
    }

    #[test]
    fn only_loopback_is_served_without_a_token() {
        assert!(bind_address(&options("127.0.0.1", None)).is_ok());
        assert!(bind_address(&options("::1", None)).is_ok());
        assert!(bind_address(&options("localhost", None)).is_ok());
        assert!(matches!(
            bind_address(&options("0.0.0.0", None)),
            Err(UiError::NeedsToken { .. })
        ));
        assert!(matches!(
            bind_address(&options("0.0.0.0", Some(""))),
            Err(UiError::NeedsToken { .. })
        ));
        assert!(bind_address(&options("0.0.0.0", Some("s3cret"))).is_ok());
        assert!(matches!(
            bind_address(&options("my-host", None)),
            Err(UiError::BadHost { .. })
        ));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
