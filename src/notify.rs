//! Notifications of job runs: webhooks by HTTP POST (a JSON body), email through the
//! target's SMTP server. A notification that cannot be sent is logged, never fatal: the
//! run's outcome is already recorded in `system.job_runs`.
//!
//! What is sent is masked ([`crate::secrets`]); a webhook URL is a credential and is
//! logged as `scheme://host/***`. A webhook that answers with a redirect is not posted
//! again elsewhere: the redirect is a failure. An address or subject holding a CR or LF
//! is refused, so that nothing can add SMTP commands or mail headers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bundle::job::{JobDef, Webhook};
use crate::bundle::{Settings, SmtpDef};
use crate::secrets::{mask, mask_url};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("the webhook request failed: {0}")]
    Http(String),
    #[error("the server answered {status}, a redirect; a webhook is never posted again elsewhere. Set the webhook's url to the final address")]
    Redirect { status: reqwest::StatusCode },
    #[error("the server answered {status}")]
    Status { status: reqwest::StatusCode },
    #[error("{what} `{}` holds a line break (CR or LF), which could inject SMTP commands or mail headers. Remove it", .value.escape_debug())]
    LineBreak { what: &'static str, value: String },
    #[error("{0}")]
    Smtp(String),
}

/// Refuses a CR or LF in something written into an SMTP command or a mail header.
pub fn single_line(what: &'static str, value: &str) -> Result<(), NotifyError> {
    if value.contains(['\r', '\n']) {
        return Err(NotifyError::LineBreak {
            what,
            value: mask(value).into_owned(),
        });
    }
    Ok(())
}

/// What a notification says.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub run_id: String,
    pub job: String,
    pub start: String,
    pub end: Option<String>,
    pub state: &'static str,
    pub error: Option<String>,
}

impl Event {
    pub fn started(run_id: &str, job: &JobDef, start: DateTime<Utc>) -> Self {
        Event {
            event: "on_start",
            run_id: run_id.into(),
            job: mask(&job.name).into_owned(),
            start: start.to_rfc3339(),
            end: None,
            state: "RUNNING",
            error: None,
        }
    }

    pub fn finished(
        run_id: &str,
        job: &JobDef,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        error: Option<String>,
    ) -> Self {
        let error = error.map(|e| mask(&e).into_owned());
        Event {
            event: if error.is_some() {
                "on_failure"
            } else {
                "on_success"
            },
            run_id: run_id.into(),
            job: mask(&job.name).into_owned(),
            start: start.to_rfc3339(),
            end: Some(end.to_rfc3339()),
            state: if error.is_some() {
                "FAILED"
            } else {
                "SUCCEEDED"
            },
            error,
        }
    }

    fn subject(&self) -> String {
        format!("[medallion] {} {}", self.job, self.state.to_lowercase())
    }
}

/// Sends `event` to every webhook and email address given.
pub async fn send(
    settings: &Settings,
    job: &JobDef,
    emails: &[String],
    webhooks: &[Webhook],
    event: &Event,
) {
    for hook in webhooks {
        if let Err(e) = post(&hook.url, event).await {
            tracing::warn!(job = %job.name, url = %mask_url(&hook.url), "webhook not delivered: {e}");
        }
    }
    if emails.is_empty() {
        return;
    }
    match &settings.smtp {
        Some(smtp) => {
            if let Err(e) = email(smtp, emails, event).await {
                tracing::warn!(job = %job.name, server = %smtp.host, "email not sent: {e}");
            }
        }
        None => tracing::warn!(
            job = %job.name,
            "email_notifications are set, but target {} has no smtp server (targets.{}.smtp)",
            settings.target,
            settings.target
        ),
    }
}

/// POSTs `event` to `url`. A redirect is not followed: following it would post the
/// event, and the run's details, to wherever the answer points.
pub async fn post(url: &str, event: &Event) -> Result<(), NotifyError> {
    let response = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| NotifyError::Client(e.without_url().to_string()))?
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(event).expect("events serialize"))
        .send()
        .await
        // The URL is a credential: the error must not quote it.
        .map_err(|e| NotifyError::Http(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(NotifyError::Redirect { status })
    } else {
        Err(NotifyError::Status { status })
    }
}

/// Sends one email through an SMTP relay (no TLS, no authentication: a local relay).
pub async fn email(smtp: &SmtpDef, to: &[String], event: &Event) -> Result<(), NotifyError> {
    single_line("the sender address", &smtp.from)?;
    for rcpt in to {
        single_line("the email address", rcpt)?;
    }
    let subject = event.subject();
    single_line("the subject", &subject)?;
    let address = format!("{}:{}", smtp.host, smtp.port);
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(&address))
        .await
        .map_err(|_| NotifyError::Smtp(format!("{address} did not answer")))?
        .map_err(|e| NotifyError::Smtp(format!("{address}: {e}")))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    async fn expect(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
        code: &str,
    ) -> Result<(), NotifyError> {
        loop {
            let line = tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .map_err(|_| NotifyError::Smtp("the SMTP server stopped answering".into()))?
                .map_err(|e| NotifyError::Smtp(e.to_string()))?
                .ok_or_else(|| NotifyError::Smtp("the SMTP server closed the connection".into()))?;
            if !line.starts_with(code) {
                return Err(NotifyError::Smtp(format!(
                    "expected {code}, got `{}`",
                    mask(&line)
                )));
            }
            // `250-...` continues, `250 ...` ends a reply.
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
    expect(&mut lines, "220").await?;
    let steps: Vec<(String, &str)> = {
        let mut s = vec![("EHLO medallion\r\n".to_string(), "250")];
        s.push((format!("MAIL FROM:<{}>\r\n", smtp.from), "250"));
        for rcpt in to {
            s.push((format!("RCPT TO:<{rcpt}>\r\n"), "250"));
        }
        s.push(("DATA\r\n".into(), "354"));
        let body = serde_json::to_string_pretty(event).expect("events serialize");
        s.push((
            format!(
                "From: {}\r\nTo: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n.\r\n",
                smtp.from,
                to.join(", "),
                subject,
                body.replace("\n.", "\n..").replace('\n', "\r\n")
            ),
            "250",
        ));
        s.push(("QUIT\r\n".into(), "221"));
        s
    };
    for (text, code) in steps {
        write
            .write_all(text.as_bytes())
            .await
            .map_err(|e| NotifyError::Smtp(e.to_string()))?;
        expect(&mut lines, code).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn an_email_reaches_an_smtp_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 test\r\n").await.unwrap();
            let mut seen = Vec::new();
            let mut in_data = false;
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push(line.clone());
                let reply: &[u8] = if in_data {
                    if line == "." {
                        in_data = false;
                        b"250 queued\r\n"
                    } else {
                        continue;
                    }
                } else if line.starts_with("EHLO") {
                    b"250-test\r\n250 OK\r\n"
                } else if line == "DATA" {
                    in_data = true;
                    b"354 go\r\n"
                } else if line == "QUIT" {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    b"250 OK\r\n"
                };
                write.write_all(reply).await.unwrap();
            }
            seen
        });
        let smtp = SmtpDef {
            host: "127.0.0.1".into(),
            port,
            from: "medallion@example.com".into(),
        };
        let job: JobDef = serde_yaml::from_str("name: j\ntasks: []").unwrap();
        let event = Event::finished("r1", &job, Utc::now(), Utc::now(), Some("boom".into()));
        email(&smtp, &["team@example.com".into()], &event)
            .await
            .unwrap();
        let seen = server.await.unwrap();
        assert!(
            seen.contains(&"RCPT TO:<team@example.com>".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"Subject: [medallion] j failed".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.iter().any(|l| l.contains("\"error\": \"boom\"")),
            "{seen:?}"
        );
    }

    /// A tiny HTTP server: answers `/hook` with a 307 redirect to `/final` and anything
    /// else with 204; returns its address and the request lines and bodies it received.
    async fn http_server() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                let mut request = String::new();
                reader.read_line(&mut request).await.unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).await.unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                tokio::io::AsyncReadExt::read_exact(&mut reader, &mut body)
                    .await
                    .unwrap();
                let line = request.trim().to_string();
                let answer = if line.starts_with("POST /hook ") {
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: /final\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
                };
                log.lock()
                    .unwrap()
                    .push((line, String::from_utf8(body).unwrap()));
                write.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (base, seen)
    }

    fn job() -> JobDef {
        serde_yaml::from_str("name: j\ntasks: []").unwrap()
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_and_is_not_followed() {
        let (base, seen) = http_server().await;
        let event = Event::started("r1", &job(), Utc::now());
        post(&format!("{base}/final"), &event).await.unwrap();
        let err = post(&format!("{base}/hook"), &event)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("307") && err.contains("url to the final address"),
            "{err}"
        );
        let lines: Vec<String> = seen.lock().unwrap().iter().map(|r| r.0.clone()).collect();
        assert_eq!(
            lines,
            ["POST /final HTTP/1.1", "POST /hook HTTP/1.1"],
            "the redirect was not followed"
        );
    }

    #[tokio::test]
    async fn bodies_and_errors_never_hold_a_secret_or_the_url() {
        crate::secrets::register("notify-secret-5150");
        let (base, seen) = http_server().await;
        let event = Event::finished(
            "r1",
            &job(),
            Utc::now(),
            Utc::now(),
            Some("login with notify-secret-5150 refused".into()),
        );
        post(&format!("{base}/final"), &event).await.unwrap();
        let body = seen.lock().unwrap()[0].1.clone();
        assert!(body.contains("login with *** refused"), "{body}");
        assert!(!body.contains("notify-secret-5150"), "{body}");
        // An unreachable webhook's error does not quote its URL.
        let err = post("http://127.0.0.1:1/hook/url-token-8080", &event)
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("url-token-8080"), "{err}");
    }

    #[tokio::test]
    async fn line_breaks_in_addresses_and_subjects_are_refused() {
        // Nothing listens: the check comes before any connection.
        let smtp = SmtpDef {
            host: "127.0.0.1".into(),
            port: 1,
            from: "medallion@example.com".into(),
        };
        let event = Event::started("r1", &job(), Utc::now());
        let err = email(
            &smtp,
            &["a@example.com\r\nRCPT TO:<x@evil.com>".into()],
            &event,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, NotifyError::LineBreak { .. }), "{err}");
        assert!(err.to_string().contains("line break"), "{err}");
        let bad_from = SmtpDef {
            from: "m@example.com\nBcc: x@evil.com".into(),
            ..smtp.clone()
        };
        let err = email(&bad_from, &["a@example.com".into()], &event)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the sender address"), "{err}");
        let mut named: JobDef = job();
        named.name = "j\r\nBcc: x@evil.com".into();
        let event = Event::started("r1", &named, Utc::now());
        let err = email(&smtp, &["a@example.com".into()], &event)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the subject"), "{err}");
    }
}
