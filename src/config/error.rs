//! Located, actionable configuration errors.
//!
//! Every error names the file, the line and column, shows the offending line with a caret under
//! the bad value, and says what would be valid. The rendering follows rustc so that editors and
//! people already know how to read it. `toml`'s own syntax and unknown-key errors are converted
//! into the same shape (keeping toml's message) so a user sees one format whatever went wrong.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where in the file an error points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    /// 1-based.
    line: usize,
    /// 1-based, counted in characters, not bytes, so the caret lines up under non-ASCII text.
    column: usize,
    /// The whole offending line, without its line ending.
    source_line: String,
    /// How many carets to draw; at least 1, never past the end of the line.
    caret_len: usize,
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    path: PathBuf,
    location: Option<Location>,
    message: String,
    note: Option<String>,
    help: Option<String>,
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, or something missing rather than wrong).
    pub fn unlocated(path: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            location: None,
            message: message.into(),
            note: None,
            help: None,
        }
    }

    /// An error pointing at the byte range `span` of `text`, the contents of `path`.
    pub fn at(path: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            location: Some(locate(text, span)),
            message: message.into(),
            note: None,
            help: None,
        }
    }

    /// Converts one of `toml`'s errors (syntax, unknown key, wrong type), keeping its message and
    /// adding a did-you-mean when an unknown key is close to a known one.
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        // toml's messages sometimes end with a newline; the rendering adds its own.
        let mut message = error.message().trim_end().to_string();
        if let (Some(span), "duplicate key") = (error.span(), message.as_str()) {
            // toml says only "duplicate key"; naming it saves a look at the caret.
            if let Some(key) = text.get(span).filter(|k| !k.is_empty()) {
                message = format!("duplicate key `{key}`");
            }
        }
        let help = unknown_field_suggestion(&message);
        let mut out = match error.span() {
            Some(span) => ConfigError::at(path, text, span, message),
            None => ConfigError::unlocated(path, message),
        };
        out.help = help;
        out
    }

    /// Adds a `= note` line, typically the valid values.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Adds a `= help:` line, typically a did-you-mean or the fix.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds `= help: did you mean ...?` when `suggestion` is `Some`.
    pub fn with_suggestion(self, suggestion: Option<&str>) -> Self {
        match suggestion {
            Some(s) => self.with_help(format!("did you mean `{s}`?")),
            None => self,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 1-based line, `None` for errors about the whole file.
    pub fn line(&self) -> Option<usize> {
        self.location.as_ref().map(|l| l.line)
    }

    /// 1-based column in characters, `None` for errors about the whole file.
    pub fn column(&self) -> Option<usize> {
        self.location.as_ref().map(|l| l.column)
    }

    /// The offending line of the file, as written.
    pub fn source_line(&self) -> Option<&str> {
        self.location.as_ref().map(|l| l.source_line.as_str())
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        let Some(loc) = &self.location else {
            write!(f, "\n  --> {}", self.path.display())?;
            return self.write_notes(f, "  ");
        };
        let number = loc.line.to_string();
        let pad = " ".repeat(number.len());
        write!(
            f,
            "\n{pad}--> {}:{}:{}",
            self.path.display(),
            loc.line,
            loc.column
        )?;
        write!(f, "\n{pad} |")?;
        write!(f, "\n{number} | {}", loc.source_line)?;
        // Keep tabs as tabs so the caret stays under the value whatever the tab width.
        let lead: String = loc
            .source_line
            .chars()
            .take(loc.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "\n{pad} | {lead}{}", "^".repeat(loc.caret_len))?;
        self.write_notes(f, &format!("{pad} "))
    }
}

impl ConfigError {
    fn write_notes(&self, f: &mut fmt::Formatter<'_>, indent: &str) -> fmt::Result {
        if let Some(note) = &self.note {
            write!(f, "\n{indent}= {note}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n{indent}= help: {help}")?;
        }
        Ok(())
    }
}

/// All errors found in one file; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// `None` when there is nothing to report, so a `ConfigErrors` is never empty.
    pub fn new(errors: Vec<ConfigError>) -> Option<ConfigErrors> {
        if errors.is_empty() {
            None
        } else {
            Some(ConfigErrors(errors))
        }
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false; here because clippy expects it next to `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                // A blank line between errors, as rustc does.
                f.write_str("\n\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Turns a byte range into line, column, the line's text and a caret length.
fn locate(text: &str, span: Range<usize>) -> Location {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let source_line = text[line_start..line_end].trim_end_matches('\r');
    let column = text[line_start..start].chars().count() + 1;
    // A span over several lines (a whole table) is underlined to the end of its first line.
    let caret_end = end.min(line_start + source_line.len()).max(start);
    let caret_len = text[start..caret_end].chars().count().max(1);
    Location {
        line: text[..start].matches('\n').count() + 1,
        column,
        source_line: source_line.to_string(),
        caret_len,
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// serde words unknown-field errors as "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a`" / "expected `a` or `b`"): the first backquoted word is the unknown key, the
/// rest are the valid ones.
fn unknown_field_suggestion(message: &str) -> Option<String> {
    if !message.starts_with("unknown field `") {
        return None;
    }
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (unknown, known) = quoted.split_first()?;
    did_you_mean(unknown, known.iter().copied()).map(|s| format!("did you mean `{s}`?"))
}

/// The closest candidate to `input`, if it is close enough to be a plausible typo: within a
/// third of the candidate's length in edits (at least one), compared case-insensitively.
pub(super) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let input = input.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&input, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of two adjacent
/// characters (Levenshtein plus transpositions, the "optimal string alignment" variant):
/// `wbe` for `web` is one slip of the fingers, not two.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the classic table: two back (for swaps), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j - 1] + cost)
                .min(previous[j] + 1)
                .min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        let cases = [
            ("", "", 0),
            ("abc", "", 3),
            ("", "abc", 3),
            ("round-robin", "round_robin", 1),
            ("hosts", "host", 1),
            ("kitten", "sitting", 3),
            ("json", "json", 0),
            ("ä", "a", 1),
            // Adjacent swaps count once.
            ("wbe", "web", 1),
            ("jsno", "json", 1),
            ("ab", "ba", 1),
            ("ca", "abc", 3),
        ];
        for (a, b, want) in cases {
            assert_eq!(edit_distance(a, b), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn did_you_mean_picks_the_closest_plausible_candidate() {
        let algorithms = ["round_robin", "random", "maglev", "ring_hash"];
        let cases = [
            ("round-robin", Some("round_robin")),
            ("RANDOM", Some("random")),
            ("magelv", Some("maglev")),
            ("ring-hash", Some("ring_hash")),
            ("fastest", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(did_you_mean(input, algorithms), want, "{input:?}");
        }
    }

    #[test]
    fn renders_like_rustc() {
        let text = "[pool.api]\n\n\n\n\n\n\n\n\n\n\nalgorithm = \"round-robin\"\n";
        let start = text.find("\"round").unwrap();
        let error = ConfigError::at(
            Path::new("config/sluice.toml"),
            text,
            start..start + 13,
            "unknown algorithm `round-robin`",
        )
        .with_note("expected one of: round_robin, weighted_round_robin")
        .with_suggestion(Some("round_robin"));
        let want = "\
error: unknown algorithm `round-robin`
  --> config/sluice.toml:12:13
   |
12 | algorithm = \"round-robin\"
   |             ^^^^^^^^^^^^^
   = expected one of: round_robin, weighted_round_robin
   = help: did you mean `round_robin`?";
        assert_eq!(error.to_string(), want);
        assert_eq!((error.line(), error.column()), (Some(12), Some(13)));
    }

    #[test]
    fn locates_spans() {
        // (text, span, line, column, caret length)
        let cases: &[(&str, Range<usize>, usize, usize, usize)] = &[
            ("a = 1", 4..5, 1, 5, 1),
            ("a = 1\nb = 22\n", 10..12, 2, 5, 2),
            // Empty span (end of file) still gets one caret.
            ("a = ", 4..4, 1, 5, 1),
            // A span over several lines is cut at the end of the first.
            ("[t]\nx = 1\n", 0..10, 1, 1, 3),
            // Columns count characters, not bytes.
            ("é = \"x\"", 5..8, 1, 5, 3),
            // CRLF line endings do not leak into the shown line.
            ("a = 1\r\nb = 2\r\n", 11..12, 2, 5, 1),
            // Out-of-range spans are clamped rather than panicking.
            ("a", 7..9, 1, 2, 1),
        ];
        for (text, span, line, column, carets) in cases {
            let loc = locate(text, span.clone());
            assert_eq!(
                (loc.line, loc.column, loc.caret_len),
                (*line, *column, *carets),
                "{text:?} {span:?}"
            );
            assert!(!loc.source_line.contains(['\r', '\n']));
        }
    }

    #[test]
    fn tabs_keep_the_caret_aligned() {
        let text = "\tname = 1";
        let error = ConfigError::at(Path::new("f.toml"), text, 8..9, "bad");
        assert!(error.to_string().contains("\n  | \t       ^"));
    }

    #[test]
    fn unlocated_errors_name_the_file() {
        let error = ConfigError::unlocated(Path::new("missing.toml"), "cannot read config file")
            .with_help("pass --config");
        assert_eq!(
            error.to_string(),
            "error: cannot read config file\n  --> missing.toml\n  = help: pass --config"
        );
        assert_eq!(error.line(), None);
    }

    #[test]
    fn unknown_field_errors_get_a_suggestion() {
        let cases = [
            (
                "unknown field `hosts`, expected one of `listener`, `host`, `pool`",
                Some("did you mean `host`?"),
            ),
            (
                "unknown field `pol`, expected `pool`",
                Some("did you mean `pool`?"),
            ),
            ("unknown field `zzz`, expected `host` or `pool`", None),
            ("invalid type: integer `1`, expected a string", None),
        ];
        for (message, want) in cases {
            assert_eq!(
                unknown_field_suggestion(message).as_deref(),
                want,
                "{message}"
            );
        }
    }

    #[test]
    fn errors_display_every_error() {
        let path = Path::new("f.toml");
        let errors = ConfigErrors::new(vec![
            ConfigError::unlocated(path, "first"),
            ConfigError::unlocated(path, "second"),
        ])
        .unwrap();
        let shown = errors.to_string();
        assert!(shown.contains("error: first") && shown.contains("error: second"));
        assert!(shown.contains("\n\nerror: second"));
        assert_eq!(errors.len(), 2);
        assert!(ConfigErrors::new(Vec::new()).is_none());
    }
}
