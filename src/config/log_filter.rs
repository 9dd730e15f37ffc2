//! What a log filter is (`log.level`, `--log-level`, `PUT /api/log-level`): one check, so the
//! file, the command line and the admin API accept and refuse the same text.

use tracing_subscriber::EnvFilter;

use super::error::did_you_mean;

/// The level names, for "did you mean" and the note of an error.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// What to write instead, for error notes.
pub const LOG_FILTER_NOTE: &str = "expected a level (trace, debug, info, warn, error, off) \
                                   or tracing directives like `sluice=debug,warn`";

#[derive(Debug, thiserror::Error)]
pub enum LogFilterError {
    #[error("log level is empty")]
    Empty,
    /// A lone word is a valid filter (every event of that target), so tracing would accept
    /// `infoo`; a near miss of a level name is almost surely a typo.
    #[error("unknown log level `{text}`")]
    UnknownLevel {
        text: String,
        suggestion: &'static str,
    },
    #[error("invalid log filter `{text}`: {source}")]
    Invalid {
        text: String,
        source: tracing_subscriber::filter::ParseError,
    },
}

impl LogFilterError {
    /// The level `UnknownLevel` was probably meant to be.
    pub fn suggestion(&self) -> Option<&'static str> {
        match self {
            LogFilterError::UnknownLevel { suggestion, .. } => Some(suggestion),
            _ => None,
        }
    }
}

/// Parses a tracing filter (`info`, `sluice=debug,warn`), surrounding whitespace ignored.
pub fn log_filter(text: &str) -> Result<EnvFilter, LogFilterError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(LogFilterError::Empty);
    }
    let is_word = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if is_word && !LOG_LEVELS.contains(&text.to_ascii_lowercase().as_str()) {
        if let Some(suggestion) = did_you_mean(text, LOG_LEVELS) {
            return Err(LogFilterError::UnknownLevel {
                text: text.to_string(),
                suggestion,
            });
        }
    }
    EnvFilter::try_new(text).map_err(|source| LogFilterError::Invalid {
        text: text.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse() {
        for ok in [
            "info",
            " warn\n",
            "DEBUG",
            "sluice=debug,warn",
            "off",
            "access=off,info",
        ] {
            assert!(log_filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn empty_typos_and_garbage_are_refused() {
        assert!(matches!(log_filter("  "), Err(LogFilterError::Empty)));
        let typo = log_filter("infoo").unwrap_err();
        assert_eq!(typo.suggestion(), Some("info"));
        assert_eq!(typo.to_string(), "unknown log level `infoo`");
        let bad = log_filter("sluice=loud").unwrap_err();
        assert!(matches!(bad, LogFilterError::Invalid { .. }), "{bad}");
        assert!(bad
            .to_string()
            .starts_with("invalid log filter `sluice=loud`: "));
    }

    #[test]
    fn a_word_far_from_every_level_is_a_target() {
        // Not a typo of a level: tracing reads it as "everything of target `hyper`".
        assert!(log_filter("hyper").is_ok());
    }
}
