//! Reading configuration from the environment.
//!
//! Every variable is read through a [`Source`], so tests pass a map instead of mutating the process
//! environment. A secret may come from `NAME` or from the file named by `NAME_FILE` (trailing
//! whitespace trimmed). A [`Reader`] collects every problem it meets and reports them all at once:
//! an operator fixes a broken deployment in one round, not one variable at a time. Error messages
//! name variables, never their secret values.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The cores this process may use (a container's CPU quota included): the default size of the
/// gateway's and the control plane's worker pools.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where configuration values come from.
pub trait Source {
    /// The raw value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).map(|v| (*v).to_owned())
    }
}

/// One configuration problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable at fault.
    pub name: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Every problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {}: {}", e.name, e.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// Whether `name` has a problem (for tests).
    pub fn mentions(&self, name: &str) -> bool {
        self.0.iter().any(|e| e.name == name)
    }
}

/// Deployment mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Local development: insecure transports allowed, relaxed checks, never for real traffic.
    Dev,
    /// Everything else. Refuses to start on any hardening-checklist violation.
    Production,
}

/// Collects values and problems.
pub struct Reader<'a> {
    src: &'a dyn Source,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    /// Starts reading from `src`.
    pub fn new(src: &'a dyn Source) -> Self {
        Self { src, errors: Vec::new() }
    }

    /// Records a problem with `name`.
    pub fn problem(&mut self, name: &str, problem: impl Into<String>) {
        self.errors.push(ConfigError { name: name.to_owned(), problem: problem.into() });
    }

    /// Whether any problem was recorded so far.
    pub fn has_problems(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Whether a problem was already recorded for `name` (or `NAME_FILE`), so callers do not
    /// report the same variable twice.
    pub fn has_problems_for(&self, name: &str) -> bool {
        self.errors.iter().any(|e| e.name == name || e.name.strip_suffix("_FILE") == Some(name))
    }

    /// The value of `name` or of the file named by `NAME_FILE`; empty values count as unset.
    pub fn optional(&mut self, name: &str) -> Option<String> {
        let direct = self.src.get(name).filter(|v| !v.is_empty());
        let file_var = format!("{name}_FILE");
        let file = self.src.get(&file_var).filter(|v| !v.is_empty());
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.problem(name, format!("set both {name} and {file_var}; set one"));
                None
            }
            (Some(v), None) => Some(v),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let value = text.trim_end().to_owned();
                    if value.is_empty() {
                        self.problem(&file_var, format!("file {path} is empty"));
                        None
                    } else {
                        Some(value)
                    }
                }
                Err(e) => {
                    self.problem(&file_var, format!("cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A value that must be set.
    pub fn required(&mut self, name: &str) -> Option<String> {
        let v = self.optional(name);
        if v.is_none() && !self.has_problems_for(name) {
            self.problem(name, "is required");
        }
        v
    }

    /// A string with a default.
    pub fn string(&mut self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    /// A parsed value with a default.
    pub fn parse<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => default,
            Some(raw) => raw.trim().parse().unwrap_or_else(|e| {
                self.problem(name, format!("cannot parse {raw:?}: {e}"));
                default
            }),
        }
    }

    /// A boolean: `true|1|yes|on` or `false|0|no|off` (any case).
    pub fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.optional(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => false,
            Some(v) => {
                self.problem(name, format!("expected true or false, got {v:?}"));
                default
            }
        }
    }

    /// A duration in milliseconds (> 0).
    pub fn millis(&mut self, name: &str, default_ms: u64) -> Duration {
        let ms = self.parse(name, default_ms);
        if ms == 0 {
            self.problem(name, "must be greater than 0");
        }
        Duration::from_millis(ms.max(1))
    }

    /// A duration in whole seconds (> 0).
    pub fn seconds(&mut self, name: &str, default_s: u64) -> Duration {
        let s = self.parse(name, default_s);
        if s == 0 {
            self.problem(name, "must be greater than 0");
        }
        Duration::from_secs(s.max(1))
    }

    /// A duration written `250ms`, `5s`, `2m` or `1h`; a bare number means seconds. Must be > 0.
    pub fn duration(&mut self, name: &str, default: Duration) -> Duration {
        let Some(raw) = self.optional(name) else { return default };
        match parse_duration(raw.trim()) {
            Some(d) if !d.is_zero() => d,
            _ => {
                self.problem(name, format!("expected a positive duration like 500ms, 5s or 2m, got {raw:?}"));
                default
            }
        }
    }

    /// A hex-encoded key of at least `min_bytes` bytes that is not all zero. Absent ⇒ `None`.
    pub fn hex_key(&mut self, name: &str, min_bytes: usize) -> Option<Vec<u8>> {
        let raw = self.optional(name)?;
        match hex::decode(raw.trim()) {
            Err(_) => {
                self.problem(name, "must be hex-encoded");
                None
            }
            Ok(k) if k.len() < min_bytes => {
                self.problem(name, format!("must be at least {min_bytes} bytes ({} hex chars), got {}", min_bytes * 2, k.len()));
                None
            }
            Ok(k) if k.iter().all(|b| *b == k[0]) => {
                self.problem(name, "is a repeated byte (e.g. all zero); generate one with `openssl rand -hex 32`");
                None
            }
            Ok(k) => Some(k),
        }
    }

    /// A PEM file of CA certificates named by `name` (a path; the file is public, so there is no
    /// `NAME_FILE` form). Unset ⇒ `None`; unreadable or without a certificate ⇒ a problem.
    pub fn ca_file(&mut self, name: &str) -> Option<Vec<u8>> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let path = self.src.get(name).filter(|v| !v.is_empty())?;
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                self.problem(name, format!("cannot read {path}: {e}"));
                return None;
            }
        };
        match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
            Ok(certs) if !certs.is_empty() => Some(pem),
            Ok(_) => {
                self.problem(name, format!("{path} holds no PEM certificate"));
                None
            }
            Err(e) => {
                self.problem(name, format!("{path} is not valid PEM: {e}"));
                None
            }
        }
    }

    /// `CARACAL_MODE`: `dev` or `production` (`stable` and `rc`, the original's names, mean
    /// production). Unset means production: a forgotten variable must not weaken a deployment.
    pub fn mode(&mut self) -> Mode {
        match self.optional("CARACAL_MODE").map(|m| m.trim().to_ascii_lowercase()).as_deref() {
            None | Some("production" | "prod" | "stable" | "rc") => Mode::Production,
            Some("dev" | "development") => Mode::Dev,
            Some(other) => {
                self.problem("CARACAL_MODE", format!("expected dev or production, got {other:?}"));
                Mode::Production
            }
        }
    }

    /// Ends reading: `Ok` if nothing was wrong, else every problem.
    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() { Ok(()) } else { Err(ConfigErrors(self.errors)) }
    }
}

/// This host's name (for consumer names), or `fallback` when it cannot be read.
pub fn hostname(fallback: &str) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| fallback.to_owned())
}

/// Parses `250ms`, `5s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reports_every_problem_at_once() {
        let s = src(&[("N", "x"), ("B", "maybe"), ("K", "00".repeat(32).as_str())]);
        let mut r = Reader::new(&s);
        let _ = r.parse::<u32>("N", 1);
        let _ = r.bool("B", false);
        let _ = r.hex_key("K", 32);
        let _ = r.required("MISSING");
        let errs = r.finish().unwrap_err();
        assert_eq!(errs.0.len(), 4, "{errs}");
        for name in ["N", "B", "K", "MISSING"] {
            assert!(errs.mentions(name));
        }
    }

    #[test]
    fn secrets_come_from_files_and_are_never_echoed() {
        let dir = std::env::temp_dir().join(format!("caracal-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        std::fs::write(&path, "abcd".repeat(16) + "\n").unwrap();
        let s = src(&[("KEY_FILE", path.to_str().unwrap()), ("SHORT", "abcd")]);
        let mut r = Reader::new(&s);
        assert_eq!(r.hex_key("KEY", 32).unwrap().len(), 32);
        assert!(r.hex_key("SHORT", 32).is_none());
        let errs = r.finish().unwrap_err();
        assert!(!errs.to_string().contains("abcd"), "the value must not be printed: {errs}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn both_direct_and_file_is_an_error() {
        let s = src(&[("X", "1"), ("X_FILE", "/nonexistent")]);
        let mut r = Reader::new(&s);
        assert!(r.optional("X").is_none());
        assert!(r.finish().unwrap_err().mentions("X"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "5x", "-1s", "1.5s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let s = src(&[("T", "0s")]);
        let mut r = Reader::new(&s);
        let _ = r.duration("T", Duration::from_secs(1));
        assert!(r.finish().unwrap_err().mentions("T"));
    }

    #[test]
    fn mode_defaults_to_production() {
        let s = src(&[]);
        assert_eq!(Reader::new(&s).mode(), Mode::Production);
        let s = src(&[("CARACAL_MODE", "DEV")]);
        assert_eq!(Reader::new(&s).mode(), Mode::Dev);
        let s = src(&[("CARACAL_MODE", "stable")]);
        assert_eq!(Reader::new(&s).mode(), Mode::Production);
    }
}
