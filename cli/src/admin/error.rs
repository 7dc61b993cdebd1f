//! Every way a command fails, and the exit code each one gives.

use std::path::PathBuf;

/// A failed command. Display never includes a token: none of the variants carries one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The API answered with a non-success status (exit 1): its `error` code when the body is the
    /// API's error object, else the start of the body as the description.
    #[error("{}", refusal_message(.status, .code.as_deref(), .description.as_deref(), .request_id.as_deref()))]
    Api { status: reqwest::StatusCode, code: Option<String>, description: Option<String>, request_id: Option<String> },
    /// The chain `audit verify` checked does not verify (exit 3).
    #[error("the audit chain of zone {zone} does not verify")]
    ChainBroken { zone: String },
    /// Missing or contradictory options (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written (exit 2).
    #[error("{}: {source}", .path.display())]
    File { path: PathBuf, source: std::io::Error },
    /// The control plane could not be reached, or answered something that is not the API (exit 2).
    #[error("{0}")]
    Transport(String),
}

impl CliError {
    /// The process exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Api { .. } => 1,
            Self::Usage(_) | Self::File { .. } | Self::Transport(_) => 2,
            Self::ChainBroken { .. } => 3,
        }
    }

    pub(crate) fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::File { path: path.to_owned(), source }
    }

    /// A reqwest failure with its causes (reqwest's own message names only the URL).
    pub(crate) fn transport(e: &reqwest::Error) -> Self {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        Self::Transport(text)
    }
}

/// `401 Unauthorized: invalid_admin_token: <description> (request <id>)`, leaving out what is missing.
fn refusal_message(status: &reqwest::StatusCode, code: Option<&str>, description: Option<&str>, request_id: Option<&str>) -> String {
    let mut text = status.to_string();
    for part in [code, description].into_iter().flatten() {
        text.push_str(": ");
        text.push_str(part);
    }
    if let Some(id) = request_id {
        text.push_str(&format!(" (request {id})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_status_code_description_and_request() {
        let e = CliError::Api {
            status: reqwest::StatusCode::UNAUTHORIZED,
            code: Some("invalid_admin_token".into()),
            description: Some("admin token required".into()),
            request_id: Some("r1".into()),
        };
        assert_eq!(e.to_string(), "401 Unauthorized: invalid_admin_token: admin token required (request r1)");
        assert_eq!(e.exit_code(), 1);
        let bare = CliError::Api { status: reqwest::StatusCode::BAD_GATEWAY, code: None, description: None, request_id: None };
        assert_eq!(bare.to_string(), "502 Bad Gateway");
    }

    #[test]
    fn exit_codes_tell_a_refusal_from_a_usage_error_and_a_broken_chain() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Transport("x".into()).exit_code(), 2);
        assert_eq!(CliError::ChainBroken { zone: "z".into() }.exit_code(), 3);
    }
}
