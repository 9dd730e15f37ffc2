//! `sluice probe URL`: one plain-HTTP `GET`, for container health checks in images that have no
//! shell and no curl (the Dockerfile's `HEALTHCHECK`, Kubernetes `exec` probes).
//!
//! Success is a `2xx` answer within the timeout; anything else (another status, a refused or
//! reset connection, no answer in time, a URL that is not `http://`) is a failure with a one-line
//! reason. Only `http://` is supported: the admin API it is meant for is plain HTTP on loopback.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a probe failed; `Display` is the line `sluice probe` prints on stderr.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid URL `{0}`: {1}")]
    BadUrl(String, String),
    #[error("{url}: answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {reason}")]
    Failed { url: String, reason: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// Sends `GET url` and waits at most `timeout` for the response head (connect included).
/// `Ok` with the status when it is `2xx`.
pub fn probe(url: &str, timeout: Duration) -> Result<StatusCode, ProbeError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ProbeError::BadUrl(url.into(), e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(ProbeError::BadUrl(
                url.into(),
                format!("scheme `{other}` is not supported; only http://"),
            ))
        }
        None => {
            return Err(ProbeError::BadUrl(
                url.into(),
                "expected an absolute URL like http://127.0.0.1:9901/healthz".into(),
            ))
        }
    }
    if uri.host().is_none() {
        return Err(ProbeError::BadUrl(url.into(), "no host".into()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProbeError::Failed {
            url: url.into(),
            reason: format!("cannot start a runtime: {e}"),
        })?;
    runtime.block_on(async {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let request = Request::get(uri)
            .header(http::header::USER_AGENT, "sluice-probe")
            .body(Empty::new())
            .expect("a GET with a valid URI is a valid request");
        match tokio::time::timeout(timeout, client.request(request)).await {
            Err(_) => Err(ProbeError::Timeout {
                url: url.into(),
                timeout,
            }),
            Ok(Err(e)) => Err(ProbeError::Failed {
                url: url.into(),
                reason: error_chain(&e),
            }),
            Ok(Ok(response)) if response.status().is_success() => Ok(response.status()),
            Ok(Ok(response)) => Err(ProbeError::Status {
                url: url.into(),
                status: response.status(),
            }),
        }
    })
}

/// The error and its sources, `: `-separated ("client error (Connect): tcp connect error: ...").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Parses `--timeout`: a number with a unit, `ms`, `s` or `m` (`"500ms"`, `"2s"`).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit; write e.g. `2s` or `500ms`"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number followed by ms, s or m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}`; expected ms, s or m"
            ))
        }
    };
    if duration.is_zero() {
        return Err("the timeout must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_units() {
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_timeout("2").is_err());
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("2h").is_err());
        assert!(parse_timeout("s").is_err());
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        let t = Duration::from_millis(100);
        assert!(matches!(
            probe("https://127.0.0.1:1/", t),
            Err(ProbeError::BadUrl(..))
        ));
        assert!(matches!(probe("/healthz", t), Err(ProbeError::BadUrl(..))));
        assert!(matches!(probe("not a url", t), Err(ProbeError::BadUrl(..))));
    }
}
