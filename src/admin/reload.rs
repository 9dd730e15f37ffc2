//! `POST /api/reload`: the reload's report (200), or why the file was refused (400) while the
//! running config keeps serving.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::json;
use crate::reload::control::ReloadResult;
use crate::reload::ReloadError;

/// One refused-file error, located, as `sluice check` prints it (`text`) and in parts.
#[derive(Debug, Serialize)]
struct ErrorView {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
    /// The full message with the offending line and a caret.
    text: String,
}

#[derive(Debug, Serialize)]
struct Refused {
    /// The generation still serving.
    generation: u64,
    errors: Vec<ErrorView>,
}

pub fn answer(result: ReloadResult, generation: u64) -> Response<Full<Bytes>> {
    let errors = match result {
        Ok(report) => {
            return json(
                StatusCode::OK,
                serde_json::to_vec_pretty(&report).unwrap_or_default(),
            )
        }
        Err(ReloadError::Invalid(errors)) => errors
            .iter()
            .map(|e| ErrorView {
                file: e.path().display().to_string(),
                line: e.line(),
                column: e.column(),
                message: e.message().to_string(),
                text: e.to_string(),
            })
            .collect(),
        Err(e @ ReloadError::Bind(_)) => vec![ErrorView {
            file: String::new(),
            line: None,
            column: None,
            message: e.to_string(),
            text: e.to_string(),
        }],
        Err(ReloadError::Stopped) => {
            return super::text(StatusCode::SERVICE_UNAVAILABLE, "sluice is shutting down\n")
        }
    };
    let body = Refused { generation, errors };
    json(
        StatusCode::BAD_REQUEST,
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )
}
