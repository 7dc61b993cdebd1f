//! Bearer tokens from a flag, the environment or a file, kept out of every message.

use std::path::Path;

use crate::error::CliError;

/// A bearer token. No `Debug` or `Display`: the only way out is [`Secret::expose`], for the header.
pub(crate) struct Secret(String);

impl Secret {
    /// The token from `file` (its first line) or `value`; `what` names it in errors ("admin token").
    pub(crate) fn resolve(value: Option<String>, file: Option<&Path>, what: &str, hint: &str) -> Result<Self, CliError> {
        let raw = match (value, file) {
            (Some(_), Some(_)) => return Err(CliError::Usage(format!("give the {what} once: a value or a file, not both"))),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(CliError::file(path))?,
            (Some(v), None) => v,
            (None, None) => return Err(CliError::Usage(format!("no {what}: {hint}"))),
        };
        let token = raw.trim().to_owned();
        // A header refuses control characters; say so without echoing what was given.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::Usage(format!("the {what} is empty or has characters a bearer token cannot have")));
        }
        Ok(Self(token))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// Writes a token shown once to `path`, readable by its owner only (mode 0600, also when the file
/// already existed with a wider mode).
pub(crate) fn save(path: &Path, token: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(CliError::file(path))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(CliError::file(path))?;
    writeln!(f, "{token}").map_err(CliError::file(path))
}
