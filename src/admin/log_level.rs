//! `GET` and `PUT /api/log-level`: the running log filter, and changing it without a restart.
//!
//! The body of a PUT is a tracing filter (`info`, `sluice=debug,warn`) as plain text, or
//! `{"level": "..."}`. It applies at once and stays until the next PUT, or the next reload
//! that changes `log.level` in the file.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{json, not_allowed, text};
use crate::config::{LogFilterError, LOG_FILTER_NOTE};
use crate::state::Shared;
use crate::telemetry::TelemetryError;

/// A filter is a line of directives; anything longer is a mistake.
const MAX_FILTER_BYTES: usize = 4096;

pub async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method();
    if method != Method::GET && method != Method::PUT {
        return not_allowed("GET, PUT");
    }
    let Some(control) = &shared.log else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no reloadable logger is installed in this process (sluice runs embedded); \
             the log level cannot be read or changed here\n",
        );
    };
    if method == Method::GET {
        let body = serde_json::json!({ "level": control.current() });
        return json(StatusCode::OK, pretty(&body));
    }
    let body = match Limited::new(req.into_body(), MAX_FILTER_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "a log filter is at most 4096 bytes\n",
            )
        }
    };
    let Some(filter) = filter_of(&body) else {
        return refused(
            "the body must be a tracing filter as UTF-8 text, or {\"level\": \"...\"}",
            None,
            control.current(),
        );
    };
    match control.set(&filter) {
        Ok(change) => {
            let body = serde_json::json!({ "level": change.level, "previous": change.previous });
            json(StatusCode::OK, pretty(&body))
        }
        Err(TelemetryError::Filter(e)) => refused(&e.to_string(), Some(&e), control.current()),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            pretty(&serde_json::json!({ "error": e.to_string() })),
        ),
    }
}

/// The filter a PUT body names: the text itself, or the `level` of a JSON object.
fn filter_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        return value.get("level")?.as_str().map(str::to_owned);
    }
    Some(text.to_owned())
}

/// `400`: why, what would be valid, and the filter still in force.
fn refused(error: &str, cause: Option<&LogFilterError>, level: String) -> Response<Full<Bytes>> {
    let help = match cause.and_then(LogFilterError::suggestion) {
        Some(s) => format!("did you mean `{s}`?"),
        None => LOG_FILTER_NOTE.to_string(),
    };
    let body = serde_json::json!({ "error": error, "help": help, "level": level });
    json(StatusCode::BAD_REQUEST, pretty(&body))
}

fn pretty(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::filter_of;

    #[test]
    fn a_body_is_the_filter_or_a_json_level() {
        assert_eq!(
            filter_of(b"sluice=debug,warn\n").as_deref(),
            Some("sluice=debug,warn\n")
        );
        assert_eq!(
            filter_of(br#" {"level": "debug"}"#).as_deref(),
            Some("debug")
        );
        assert_eq!(filter_of(br#"{"level": 3}"#), None);
        assert_eq!(filter_of(br#"{"lvl": "debug"}"#), None);
        assert_eq!(filter_of(b"\xff"), None);
    }
}
