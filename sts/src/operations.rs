//! Declared operations of an enforced resource: which `(method, path)` may pass the gateway, and
//! which scope each needs.
//!
//! Path patterns are matched segment by segment: a literal segment matches itself, `*` matches exactly
//! one non-empty segment, and a final `**` matches any remainder (including nothing). Paths reaching
//! here have passed the gateway's traversal check.

use serde::{Deserialize, Serialize};

/// One declared operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub method: String,
    pub path: String,
    pub scope: String,
}

impl Operation {
    /// Checks a declaration on upload; `scopes` are the resource's scopes.
    pub fn validate(&self, scopes: &[String]) -> Result<(), String> {
        if self.method.is_empty() || self.method.len() > 16 || !self.method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("operation method {:?} must be an upper-case HTTP method", self.method));
        }
        if !self.path.starts_with('/') || self.path.len() > 512 {
            return Err(format!("operation path {:?} must be absolute (start with /)", self.path));
        }
        if let Some(pos) = self.path.find("**")
            && pos + 2 != self.path.len()
        {
            return Err(format!("operation path {:?}: ** may only end a pattern", self.path));
        }
        if !scopes.contains(&self.scope) {
            return Err(format!("operation scope {:?} is not one of the resource's scopes", self.scope));
        }
        Ok(())
    }

    /// Whether this operation covers `method` and `path`.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method.eq_ignore_ascii_case(method) && path_matches(&self.path, path)
    }
}

/// Segment-wise pattern match (see module docs).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.split('/');
    let mut segs = path.split('/');
    loop {
        match (pat.next(), segs.next()) {
            (Some("**"), _) => return pat.next().is_none(),
            (Some("*"), Some(s)) if !s.is_empty() => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Why `path` could be read differently by an upstream than by [`path_matches`], if it could:
/// `;` path parameters (Tomcat and Spring drop them, so `..;` is `..`), backslashes (some servers
/// treat them as `/`), percent-escapes of a separator, a dot, `%` itself or a control character
/// (decoded after routing, or twice), and malformed escapes.
pub fn ambiguity(path: &str) -> Option<&'static str> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b';' => return Some("path parameter"),
            b'\\' => return Some("backslash"),
            b if b < 0x20 || b == 0x7f => return Some("control character"),
            b'%' => {
                let decoded =
                    bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
                match decoded {
                    None => return Some("malformed escape"),
                    Some(b'/' | b'\\') => return Some("encoded separator"),
                    Some(b'.') => return Some("encoded dot"),
                    Some(b'%') => return Some("double encoding"),
                    Some(b';') => return Some("encoded path parameter"),
                    Some(c) if c < 0x20 || c == 0x7f => return Some("encoded control character"),
                    Some(_) => i += 2,
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_table() {
        let cases = [
            ("/items", "/items", true),
            ("/items", "/items/", false),
            ("/items", "/items/1", false),
            ("/items/*", "/items/1", true),
            ("/items/*", "/items/", false),
            ("/items/*", "/items/1/2", false),
            ("/items/*/tags", "/items/9/tags", true),
            ("/items/**", "/items", true),
            ("/items/**", "/items/1/2/3", true),
            ("/items/**", "/itemsX", false),
            ("/**", "/anything/at/all", true),
            ("/a", "/b", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(path_matches(pattern, path), want, "{pattern} vs {path}");
        }
    }

    #[test]
    fn method_is_case_insensitive_and_validation_catches_bad_declarations() {
        let scopes = vec!["read".to_owned()];
        let op = Operation { method: "GET".into(), path: "/items/*".into(), scope: "read".into() };
        assert!(op.matches("get", "/items/1"));
        assert!(!op.matches("POST", "/items/1"));
        assert!(op.validate(&scopes).is_ok());
        for bad in [
            Operation { method: "get".into(), ..op.clone() },
            Operation { path: "items".into(), ..op.clone() },
            Operation { path: "/a/**/b".into(), ..op.clone() },
            Operation { scope: "write".into(), ..op.clone() },
        ] {
            assert!(bad.validate(&scopes).is_err(), "{bad:?}");
        }
    }
}
