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

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(r: Result<Secret, CliError>) -> String {
        match r {
            Err(CliError::Usage(m)) => m,
            Err(other) => panic!("not a usage error: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_token_comes_from_one_place_and_is_never_echoed() {
        let dir = std::env::temp_dir().join(format!("caracal-admin-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "cat_from_file\n").unwrap();
        assert_eq!(Secret::resolve(None, Some(&file), "admin token", "").unwrap().expose(), "cat_from_file", "the newline is trimmed");
        assert_eq!(Secret::resolve(Some(" cat_flag ".into()), None, "admin token", "").unwrap().expose(), "cat_flag");
        assert!(usage(Secret::resolve(Some("cat_a".into()), Some(&file), "admin token", "")).contains("not both"));
        assert!(usage(Secret::resolve(None, None, "admin token", "--token-file")).contains("--token-file"));
        let bad = usage(Secret::resolve(Some("cat_se\u{7}cret".into()), None, "admin token", ""));
        assert!(!bad.contains("cat_se"), "the message does not quote the token: {bad}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_saved_token_is_the_owners_only_even_over_a_wider_file() {
        use std::os::unix::fs::PermissionsExt;
        let file = std::env::temp_dir().join(format!("caracal-admin-save-{}", std::process::id()));
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&file, "cat_new").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "cat_new\n");
        std::fs::remove_file(&file).unwrap();
    }
}
