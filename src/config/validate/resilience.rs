//! Pool resilience checks: `all_unhealthy` and the `health_check`, `outlier_detection`,
//! `retry` and `limits` tables.
//!
//! A written table gives its settings, each missing key taking its default; an omitted table
//! turns its feature off, except `limits`, which is always on. The defaults are the `Default`
//! impls of the runtime types in `config/mod.rs`, so they are written down in one place.

use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use toml::Spanned;

use super::values::{
    parse_duration, parse_health_path, parse_status_range, show_duration, STATUS_FORM,
};
use super::Checker;
use crate::config::error::did_you_mean;
use crate::config::file::{self, DurationText, TextOrNumber};
use crate::config::{
    AllUnhealthy, HealthCheck, Limits, OutlierDetection, Protocol, Retry, RetryOn,
};

const ALL_UNHEALTHY: [&str; 2] = ["fail_closed", "fail_open"];
const RETRY_CONDITIONS: [&str; 5] = ["connect_failure", "reset", "502", "503", "504"];
/// Health check thresholds: beyond 100 consecutive probes a flip would take hours at
/// ordinary intervals, which is surely a slip.
const THRESHOLDS: RangeInclusive<u32> = 1..=100;
const CONSECUTIVE_FAILURES: RangeInclusive<u32> = 1..=1000;
const PERCENT: RangeInclusive<u32> = 0..=100;
/// Each retry is another full exchange with a backend; more than 10 only multiplies the load
/// on a pool that is already failing.
const ATTEMPTS: RangeInclusive<u32> = 0..=10;
const MAX_CONNECTIONS_PER_BACKEND: RangeInclusive<u32> = 1..=1_000_000;
const MAX_PENDING: RangeInclusive<u32> = 0..=1_000_000;

impl Checker<'_> {
    pub(super) fn all_unhealthy(&mut self, written: Option<&Spanned<String>>) -> AllUnhealthy {
        let Some(written) = written else {
            return AllUnhealthy::default();
        };
        match written.get_ref().as_str() {
            "fail_closed" => AllUnhealthy::FailClosed,
            "fail_open" => AllUnhealthy::FailOpen,
            _ => {
                let error = self.choice_error(
                    written,
                    "all_unhealthy value",
                    &ALL_UNHEALTHY,
                    &ALL_UNHEALTHY,
                );
                self.push(error);
                AllUnhealthy::default()
            }
        }
    }

    /// `[pool.NAME.health_check]`: `None` when the table is omitted (checks off).
    pub(super) fn health_check(
        &mut self,
        written: Option<file::HealthCheckFile>,
        protocol: Protocol,
    ) -> Option<HealthCheck> {
        let written = written?;
        let grpc_service = written.grpc_service.as_ref().map(|service| {
            if written.path.is_some() {
                let error = self
                    .error(
                        service.span(),
                        "health_check has both `path` and `grpc_service`",
                    )
                    .with_note("a probe is either an HTTP GET of `path` or a gRPC health check")
                    .with_help("keep one of them");
                self.push(error);
            } else if protocol != Protocol::H2 {
                let error = self
                    .error(
                        service.span(),
                        "gRPC health checks need `protocol = \"h2\"`",
                    )
                    .with_note("gRPC runs over HTTP/2; this pool speaks HTTP/1.1 to its backends")
                    .with_help(
                        "set `protocol = \"h2\"` on the pool, or use `path` for an HTTP check",
                    );
                self.push(error);
            }
            service.get_ref().clone()
        });
        let defaults = HealthCheck::default();
        let path = written
            .path
            .as_ref()
            .and_then(|path| match parse_health_path(path.get_ref()) {
                Ok(path) => Some(path),
                Err(e) => {
                    self.push(self.value_error(path.span(), e));
                    None
                }
            });
        let interval = self.positive_duration(
            written.interval.as_ref(),
            defaults.interval,
            "an interval of zero would probe without pause",
            "interval must be greater than zero; the default is 5s",
        );
        let timeout = self.positive_duration(
            written.timeout.as_ref(),
            defaults.timeout,
            "a timeout of zero would fail everything at once",
            "timeouts must be greater than zero",
        );
        if let (Some(interval), Some(timeout)) = (interval, timeout) {
            self.check_probe_overlap(&written, interval, timeout);
        }
        let healthy_threshold = self.integer_in(
            written.healthy_threshold.as_ref(),
            "healthy_threshold",
            THRESHOLDS,
            defaults.healthy_threshold,
            "consecutive passing probes that make an unhealthy backend healthy",
        );
        let unhealthy_threshold = self.integer_in(
            written.unhealthy_threshold.as_ref(),
            "unhealthy_threshold",
            THRESHOLDS,
            defaults.unhealthy_threshold,
            "consecutive failing probes that make a healthy backend unhealthy",
        );
        let expected_status = match &written.expected_status {
            Some(status) => self
                .expected_status(status)
                .unwrap_or(defaults.expected_status.clone()),
            None => defaults.expected_status.clone(),
        };
        Some(HealthCheck {
            path,
            grpc_service,
            interval: interval.unwrap_or(defaults.interval),
            timeout: timeout.unwrap_or(defaults.timeout),
            healthy_threshold,
            unhealthy_threshold,
            expected_status,
        })
    }

    /// A probe may take up to `timeout` and the next one of the same backend is due `interval`
    /// after it started: a longer timeout would start a probe while the last one still runs.
    /// Equal is allowed: the probe that times out ends just as the next one starts.
    fn check_probe_overlap(
        &mut self,
        written: &file::HealthCheckFile,
        interval: Duration,
        timeout: Duration,
    ) {
        if timeout <= interval {
            return;
        }
        let (interval_text, timeout_text) = (show_duration(interval), show_duration(timeout));
        let (span, message) = match (&written.timeout, &written.interval) {
            (Some(t), _) => (
                t.span(),
                format!("health_check timeout {timeout_text} is longer than its interval {interval_text}"),
            ),
            (None, Some(i)) => (
                i.span(),
                format!(
                    "health_check interval {interval_text} is shorter than the default timeout {timeout_text}"
                ),
            ),
            // The defaults (5s, 2s) never overlap.
            (None, None) => return,
        };
        let error = self
            .error(span, message)
            .with_note(
                "a probe would still be running when the next probe of the same backend is due, \
                 so probes would overlap",
            )
            .with_help(format!(
                "set `timeout` to at most `interval` (\"{interval_text}\"), or lengthen `interval`"
            ));
        self.push(error);
    }

    fn expected_status(&mut self, written: &Spanned<TextOrNumber>) -> Option<RangeInclusive<u16>> {
        let text = match written.get_ref() {
            TextOrNumber::Text(text) => text.clone(),
            TextOrNumber::Number(n) => n.to_string(),
        };
        let range = match parse_status_range(&text) {
            Ok(range) => range,
            Err(e) => {
                self.push(self.value_error(written.span(), e));
                return None;
            }
        };
        if let TextOrNumber::Number(n) = written.get_ref() {
            // Unambiguous, but one spelling keeps files alike and `"200-399"` needs quotes.
            let error = self
                .error(
                    written.span(),
                    format!("expected_status `{n}` is a number, not a string"),
                )
                .with_note(STATUS_FORM)
                .with_help(format!("write it in quotes: `expected_status = \"{n}\"`"));
            self.push(error);
            return None;
        }
        Some(range)
    }

    /// `[pool.NAME.outlier_detection]`: `None` when the table is omitted (ejection off).
    pub(super) fn outlier_detection(
        &mut self,
        written: Option<file::OutlierDetectionFile>,
    ) -> Option<OutlierDetection> {
        let written = written?;
        let defaults = OutlierDetection::default();
        let consecutive_failures = self.integer_in(
            written.consecutive_failures.as_ref(),
            "consecutive_failures",
            CONSECUTIVE_FAILURES,
            defaults.consecutive_failures,
            "consecutive live-traffic failures that eject a backend",
        );
        let base_ejection = self
            .positive_duration(
                written.base_ejection.as_ref(),
                defaults.base_ejection,
                "a base_ejection of zero would return an ejected backend at once",
                "base_ejection must be greater than zero; the default is 30s",
            )
            .unwrap_or(defaults.base_ejection);
        let max_ejected_percent = self.integer_in(
            written.max_ejected_percent.as_ref(),
            "max_ejected_percent",
            PERCENT,
            defaults.max_ejected_percent,
            "the most of the pool, in percent, that may be ejected at once",
        );
        Some(OutlierDetection {
            consecutive_failures,
            base_ejection,
            max_ejected_percent,
        })
    }

    /// `[pool.NAME.retry]`: `None` when the table is omitted (no retries on another backend).
    pub(super) fn retry(&mut self, written: Option<file::RetryFile>) -> Option<Retry> {
        let written = written?;
        let defaults = Retry::default();
        let attempts = self.integer_in(
            written.attempts.as_ref(),
            "attempts",
            ATTEMPTS,
            defaults.attempts,
            "extra tries, each on another backend; 0 turns retries off",
        );
        let on = match &written.on {
            Some(conditions) => {
                // An empty list is allowed: it keeps the table (and its budget) but retries
                // nothing. Duplicates are harmless.
                let mut on = RetryOn::default();
                for condition in conditions {
                    self.retry_condition(&mut on, condition);
                }
                on
            }
            None => defaults.on,
        };
        let budget_percent = self.integer_in(
            written.budget_percent.as_ref(),
            "budget_percent",
            PERCENT,
            defaults.budget_percent,
            "retries may add at most this share of the pool's requests, in percent",
        );
        Some(Retry {
            attempts,
            on,
            budget_percent,
        })
    }

    fn retry_condition(&mut self, on: &mut RetryOn, written: &Spanned<TextOrNumber>) {
        let (text, quoted) = match written.get_ref() {
            TextOrNumber::Text(text) => (text.clone(), true),
            TextOrNumber::Number(n) => (n.to_string(), false),
        };
        let flag = match text.as_str() {
            "connect_failure" => &mut on.connect_failure,
            "reset" => &mut on.reset,
            "502" => &mut on.status_502,
            "503" => &mut on.status_503,
            "504" => &mut on.status_504,
            _ => {
                self.push(self.unknown_retry_condition(written.span(), &text));
                return;
            }
        };
        if quoted {
            *flag = true;
            return;
        }
        let error = self
            .error(
                written.span(),
                format!("retry condition `{text}` is a number, not a string"),
            )
            .with_note(format!(
                "expected one of: {}",
                quoted_list(&RETRY_CONDITIONS)
            ))
            .with_help(format!("did you mean `\"{text}\"`?"));
        self.push(error);
    }

    fn unknown_retry_condition(
        &self,
        span: Range<usize>,
        text: &str,
    ) -> crate::config::ConfigError {
        let error = self
            .error(span, format!("unknown retry condition `{text}`"))
            .with_note(format!(
                "expected one of: {}",
                quoted_list(&RETRY_CONDITIONS)
            ));
        if text.len() == 3 && text.bytes().all(|b| b.is_ascii_digit()) {
            // A near miss like `500` is not a typo of `502`: it is a status that is not retried.
            return error.with_help(
                "only 502, 503 and 504 are retried: they say the backend could not serve the \
                 request; any other answer goes to the client",
            );
        }
        if text.eq_ignore_ascii_case("timeout") {
            return error.with_help(
                "`504` also covers a backend that did not answer within `timeouts.request`",
            );
        }
        error.with_suggestion(did_you_mean(text, RETRY_CONDITIONS))
    }

    /// `[pool.NAME.limits]`: always on, every omitted key at its default.
    pub(super) fn limits(&mut self, written: Option<file::LimitsFile>) -> Limits {
        let written = written.unwrap_or_default();
        let defaults = Limits::default();
        Limits {
            max_connections_per_backend: self.integer_in(
                written.max_connections_per_backend.as_ref(),
                "max_connections_per_backend",
                MAX_CONNECTIONS_PER_BACKEND,
                defaults.max_connections_per_backend,
                "requests in flight to one backend; a backend at its limit is skipped",
            ),
            max_pending: self.integer_in(
                written.max_pending.as_ref(),
                "max_pending",
                MAX_PENDING,
                defaults.max_pending,
                "requests that may wait when every backend is at its limit; 0 answers 503 at once",
            ),
        }
    }

    /// An integer key within `range`: `default` when absent, or when out of range (the error,
    /// naming the range, what the key does and its default, is pushed).
    fn integer_in(
        &mut self,
        written: Option<&Spanned<i64>>,
        key: &str,
        range: RangeInclusive<u32>,
        default: u32,
        meaning: &str,
    ) -> u32 {
        let Some(written) = written else {
            return default;
        };
        let value = *written.get_ref();
        match u32::try_from(value) {
            Ok(n) if range.contains(&n) => n,
            _ => {
                let message = format!(
                    "{key} must be {} to {}, not {value}",
                    range.start(),
                    range.end()
                );
                let error = self
                    .error(written.span(), message)
                    .with_note(format!("{meaning}; the default is {default}"));
                self.push(error);
                default
            }
        }
    }

    /// A duration that must be greater than zero: `default` when absent, `None` when invalid
    /// (the error is pushed), so that checks comparing it with another duration can skip.
    fn positive_duration(
        &mut self,
        written: Option<&Spanned<DurationText>>,
        default: Duration,
        zero_message: &str,
        zero_note: &str,
    ) -> Option<Duration> {
        let Some(written) = written else {
            return Some(default);
        };
        match parse_duration(written.get_ref()) {
            Ok(d) if d.is_zero() => {
                let error = self
                    .error(written.span(), zero_message)
                    .with_note(zero_note);
                self.push(error);
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.push(self.value_error(written.span(), e));
                None
            }
        }
    }
}

/// `"a", "b"`: the conditions as they are written in the file, quotes included, because
/// `502` without them is a different (wrong) value.
fn quoted_list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    quoted.join(", ")
}
