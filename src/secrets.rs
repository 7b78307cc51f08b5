//! Secret values, and masking them wherever text leaves the process.
//!
//! Every value that is a secret is *registered* when the bundle is resolved: the value
//! of each `<key>_env` setting (read from the environment), of each secret-looking key
//! ([`is_secret_key`]: passwords, tokens, private keys, OAUTHBEARER configs, `sasl.*`
//! credentials), of each variable whose name looks secret, and each webhook URL (a
//! webhook URL holds its credential in its path). [`mask`] then replaces every registered
//! value in a text by `***` (a webhook URL by `scheme://host/***`). It is applied at
//! every exit: the log writer ([`MaskedWriter`]), the CLI's error and report printing,
//! `bundle validate`, `deployment.json`, `system.job_runs` and notification bodies.
//!
//! Values shorter than [`MIN_LEN`] characters (and `true` / `false`) are not registered:
//! masking them would hide ordinary words of every message without protecting anything.

use std::borrow::Cow;
use std::io::Write;
use std::sync::RwLock;

/// What a secret value is replaced by.
pub const MASK: &str = "***";

/// Values shorter than this are not registered.
pub const MIN_LEN: usize = 4;

/// The registered values with their replacement, longest value first, so that a secret
/// holding another is replaced whole.
static REGISTRY: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Registers `value` as a secret, replaced by [`MASK`].
pub fn register(value: &str) {
    register_as(value, MASK);
}

/// Registers a webhook (or any credential-bearing) URL: it is shown as
/// `scheme://host/***` ([`mask_url`]).
pub fn register_url(url: &str) {
    register_as(url, &mask_url(url));
}

fn register_as(value: &str, replacement: &str) {
    let value = value.trim();
    if value.chars().count() < MIN_LEN || matches!(value, "true" | "false") {
        return;
    }
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if registry.iter().any(|(v, _)| v == value) {
        return;
    }
    registry.push((value.to_string(), replacement.to_string()));
    registry.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
}

/// `text` with every registered secret replaced.
pub fn mask(text: &str) -> Cow<'_, str> {
    let registry = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for (value, replacement) in registry.iter() {
        if out.contains(value.as_str()) {
            out = Cow::Owned(out.replace(value.as_str(), replacement));
        }
    }
    out
}

/// Whether `value` is itself a registered secret (or webhook URL).
pub fn is_registered(value: &str) -> bool {
    let value = value.trim();
    let registry = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    registry.iter().any(|(v, _)| v == value)
}

/// A URL shown without its path, query or user info: `https://hooks.example.com/***`.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match u.host_str() {
            Some(host) => match u.port() {
                Some(port) => format!("{}://{host}:{port}/{MASK}", u.scheme()),
                None => format!("{}://{host}/{MASK}", u.scheme()),
            },
            None => format!("{}:{MASK}", u.scheme()),
        },
        Err(_) => MASK.to_string(),
    }
}

/// `sasl.*` settings that are not credentials.
const PLAIN_SASL_KEYS: &[&str] = &[
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.scope",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.token.endpoint.url",
];

/// Parts of a key (or variable name) that make its value a secret.
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "key.pem",
    "private.key",
    "api.key",
    "apikey",
    "oauthbearer.config",
];

/// Whether the value of a librdkafka key or a bundle variable named `name` is a secret:
/// passwords, secrets, tokens, credentials, private keys (`ssl.key.pem`), API keys, the
/// OAUTHBEARER config, and every `sasl.*` setting but the mechanism, the OAUTHBEARER
/// method, scope, client id and endpoint, and Kerberos's (service name, principal,
/// keytab path, kinit command). `_` and `-` count as `.`: `kafka_password` is secret.
pub fn is_secret_key(name: &str) -> bool {
    let key = name.to_ascii_lowercase().replace(['_', '-'], ".");
    if PLAIN_SASL_KEYS.contains(&key.as_str()) || key.starts_with("sasl.kerberos.") {
        return false;
    }
    key.starts_with("sasl.") || SECRET_PARTS.iter().any(|p| key.contains(p))
}

/// A `tracing_subscriber` writer that masks every line before it reaches `M`'s writer:
/// each event is buffered whole, then masked and written when the event ends.
pub struct MaskedWriter<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for MaskedWriter<M>
{
    type Writer = MaskingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter {
            buffer: Vec::new(),
            inner: self.0.make_writer(),
        }
    }
}

/// One event's writer of [`MaskedWriter`].
pub struct MaskingWriter<W: Write> {
    buffer: Vec<u8>,
    inner: W,
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            let text = String::from_utf8_lossy(&self.buffer);
            self.inner.write_all(mask(&text).as_bytes())?;
            self.buffer.clear();
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for MaskingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn registered_values_are_masked_longest_first() {
        register("pw-one-7781");
        register("pw-one-7781-and-more");
        register("abc"); // too short to mask
        register("true");
        assert_eq!(
            mask("a pw-one-7781-and-more b pw-one-7781 c abc true"),
            "a *** b *** c abc true"
        );
        assert!(matches!(mask("nothing here"), Cow::Borrowed(_)));
        assert!(is_registered("pw-one-7781") && !is_registered("x pw-one-7781"));
    }

    #[test]
    fn webhook_urls_keep_only_scheme_and_host() {
        let url = "https://hooks.example.com/services/T000/B000/XXXXsecret";
        assert_eq!(mask_url(url), "https://hooks.example.com/***");
        assert_eq!(
            mask_url("http://user:pw@127.0.0.1:8080/x?token=1"),
            "http://127.0.0.1:8080/***"
        );
        assert_eq!(mask_url("not a url"), "***");
        register_url(url);
        assert_eq!(
            mask(&format!("POST {url} failed")),
            "POST https://hooks.example.com/*** failed"
        );
    }

    #[test]
    fn secret_looking_keys() {
        for secret in [
            "sasl.password",
            "sasl.username",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.extensions",
            "kafka_password",
            "slack_token",
            "api_key",
            "AWS_SECRET_ACCESS_KEY",
            "gcp-credentials",
        ] {
            assert!(is_secret_key(secret), "{secret}");
        }
        for plain in [
            "sasl.mechanism",
            "sasl.kerberos.keytab",
            "sasl.oauthbearer.token.endpoint.url",
            "security.protocol",
            "ssl.ca.location",
            "ssl.key.location",
            "ssl.keystore.location",
            "kafka_bootstrap_servers",
            "landing_dir",
            "kafka_topic",
        ] {
            assert!(!is_secret_key(plain), "{plain}");
        }
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_log_line_is_masked() {
        register("log-secret-4242");
        let out = Shared::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(MaskedWriter(move || sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                password = "log-secret-4242",
                "login with log-secret-4242 failed"
            );
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("login with *** failed"), "{text}");
        assert!(!text.contains("log-secret-4242"), "{text}");
    }
}
