//! Errors for bad scenario files: the message, the file with the offending
//! line marked (miette renders `file:line:column` and the line), the fix.

use std::path::PathBuf;

use miette::{NamedSource, SourceSpan};

use super::yaml::Span;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read at all.
    #[error("cannot read scenario file {}: {source}", path.display())]
    #[diagnostic(code(zdt::scenario::read))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is larger than a scenario can be; it was not read.
    #[error("scenario file {} is {size} bytes; a scenario file is at most {max} bytes", path.display())]
    #[diagnostic(
        code(zdt::scenario::too_large),
        help("a scenario describes a cluster, traffic and a timeline in a few kilobytes: check that this is the file you meant")
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },

    /// The file was read but is not a valid scenario; points into the file.
    /// Every problem found is in it: the first, then the rest as `related`.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<InvalidScenario>),
}

/// A problem at one place in a scenario file.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
#[diagnostic(code(zdt::scenario::invalid))]
pub struct InvalidScenario {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
    #[help]
    pub help: Option<String>,
    /// 1-based line and column of `span`, for callers that print plainly.
    pub line: usize,
    pub column: usize,
    /// The other problems of the same file, found in the same pass.
    #[related]
    pub related: Vec<InvalidScenario>,
}

impl ScenarioError {
    pub(crate) fn invalid(
        name: &str,
        text: &str,
        span: Span,
        message: String,
        help: Option<String>,
    ) -> Self {
        let offset = floor_char_boundary(text, span.offset.min(text.len()));
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map(|i| before[i + 1..].chars().count())
            .unwrap_or(before.chars().count())
            + 1;
        ScenarioError::Invalid(Box::new(InvalidScenario {
            label: "here".into(),
            message,
            src: NamedSource::new(name, text.to_string()).with_language("yaml"),
            span: (offset, span.len.min(text.len() - offset)).into(),
            help,
            line,
            column,
            related: Vec::new(),
        }))
    }

    /// One error holding every problem in `errors` (in order, duplicates
    /// dropped), so a file's problems are reported at once.
    pub(crate) fn all(errors: Vec<ScenarioError>) -> Option<Self> {
        let mut iter = errors.into_iter();
        let first = iter.next()?;
        let ScenarioError::Invalid(mut head) = first else {
            return Some(first);
        };
        for e in iter {
            let ScenarioError::Invalid(mut e) = e else {
                continue;
            };
            let rest = std::mem::take(&mut e.related);
            for one in std::iter::once(*e).chain(rest) {
                let seen = |o: &InvalidScenario| o.span == one.span && o.message == one.message;
                if !seen(&head) && !head.related.iter().any(seen) {
                    head.related.push(one);
                }
            }
        }
        Some(ScenarioError::Invalid(head))
    }

    /// How many problems this error holds.
    pub fn problems(&self) -> usize {
        match self {
            ScenarioError::Invalid(i) => 1 + i.related.len(),
            _ => 1,
        }
    }

    /// `file:line:column: message`, for plain output and logs.
    /// Every problem is one line.
    pub fn one_line(&self) -> String {
        let line = |i: &InvalidScenario| {
            format!("{}:{}:{}: {}", i.src.name(), i.line, i.column, i.message)
        };
        match self {
            ScenarioError::Invalid(i) => std::iter::once(line(i))
                .chain(i.related.iter().map(line))
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        }
    }

    /// 1-based `(line, column)` of the error, when it points into a file.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ScenarioError::Invalid(i) => Some((i.line, i.column)),
            _ => None,
        }
    }
}

/// [`ScenarioFile::variant`](crate::ScenarioFile::variant) could not give
/// the variant asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VariantError {
    /// The file has a problem (shown as `file:line:column: message`).
    #[error("{}", .0.one_line())]
    Invalid(ScenarioError),
    /// The file has no variant of that name.
    #[error(
        "{} has no variant `{name}` (it has: {}){}",
        path.display(),
        names.join(", "),
        suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
    )]
    Unknown {
        path: PathBuf,
        name: String,
        /// The variants it has, in file order.
        names: Vec<String>,
        /// The closest name, when one is close.
        suggestion: Option<String>,
    },
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
