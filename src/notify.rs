//! Notifications of job runs: webhooks by HTTP POST (a JSON body), email through the
//! target's SMTP server. A notification that cannot be sent is logged, never fatal: the
//! run's outcome is already recorded in `system.job_runs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bundle::job::{JobDef, Webhook};
use crate::bundle::{Settings, SmtpDef};

const TIMEOUT: Duration = Duration::from_secs(10);

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
            job: job.name.clone(),
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
        Event {
            event: if error.is_some() {
                "on_failure"
            } else {
                "on_success"
            },
            run_id: run_id.into(),
            job: job.name.clone(),
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
            tracing::warn!(job = %job.name, url = %hook.url, "webhook not delivered: {e}");
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

async fn post(url: &str, event: &Event) -> Result<(), String> {
    let response = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(event).expect("events serialize"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the server answered {}", response.status()))
    }
}

/// Sends one email through an SMTP relay (no TLS, no authentication: a local relay).
pub async fn email(smtp: &SmtpDef, to: &[String], event: &Event) -> Result<(), String> {
    let address = format!("{}:{}", smtp.host, smtp.port);
    let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(&address))
        .await
        .map_err(|_| format!("{address} did not answer"))?
        .map_err(|e| format!("{address}: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    async fn expect(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
        code: &str,
    ) -> Result<(), String> {
        loop {
            let line = tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .map_err(|_| "the SMTP server stopped answering".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("the SMTP server closed the connection")?;
            if !line.starts_with(code) {
                return Err(format!("expected {code}, got `{line}`"));
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
                event.subject(),
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
            .map_err(|e| e.to_string())?;
        expect(&mut lines, code).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
