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

/// One declared MCP operation of an enforced `protocol: mcp` resource (`docs/mcp.md` §2): a
/// JSON-RPC method, for name-bearing methods a pattern over the tool / prompt name or resource
/// URI (`*` matches any run of characters, nothing else is special; absent matches any), and the
/// scope it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpOperation {
    pub mcp_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub scope: String,
}

impl McpOperation {
    /// Checks a declaration on upload; `scopes` are the resource's scopes.
    pub fn validate(&self, scopes: &[String]) -> Result<(), String> {
        let m = &self.mcp_method;
        if m.is_empty() || m.len() > 128 || !m.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.')) {
            return Err(format!("mcp_method {m:?} must be a JSON-RPC method name such as tools/call"));
        }
        if let Some(n) = &self.name
            && (n.is_empty() || n.len() > 512)
        {
            return Err(format!("mcp operation name pattern {n:?} must be 1..512 characters"));
        }
        if !scopes.contains(&self.scope) {
            return Err(format!("mcp operation scope {:?} is not one of the resource's scopes", self.scope));
        }
        Ok(())
    }

    /// Whether this declaration covers `method` with target `target` (a name or URI).
    pub fn matches(&self, method: &str, target: Option<&str>) -> bool {
        self.mcp_method == method
            && match (&self.name, target) {
                (None, _) => true,
                (Some(p), Some(t)) => glob_matches(p, t),
                (Some(_), None) => false,
            }
    }
}

/// `*` matches any run of characters (also none); every other character matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
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
    fn mcp_name_patterns() {
        let cases = [
            ("read_*", "read_file", true),
            ("read_*", "read_", true),
            ("read_*", "unread_file", false),
            ("*", "anything", true),
            ("*_repo", "delete_repo", true),
            ("*_repo", "delete_repos", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("echo", "echo", true),
            ("echo", "Echo", false),
            ("docs://*", "docs://readme", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_matches(pattern, text), want, "{pattern} vs {text}");
        }
        let op = McpOperation { mcp_method: "tools/call".into(), name: Some("read_*".into()), scope: "read".into() };
        assert!(op.matches("tools/call", Some("read_file")));
        assert!(!op.matches("tools/call", None), "a pattern needs a target");
        assert!(!op.matches("prompts/get", Some("read_file")), "methods are exact");
        let any = McpOperation { name: None, mcp_method: "tools/list".into(), ..op.clone() };
        assert!(any.matches("tools/list", None));
        let scopes = vec!["read".to_owned()];
        assert!(op.validate(&scopes).is_ok());
        assert!(McpOperation { mcp_method: "tools call".into(), ..op.clone() }.validate(&scopes).is_err());
        assert!(McpOperation { scope: "write".into(), ..op.clone() }.validate(&scopes).is_err());
        assert!(McpOperation { name: Some(String::new()), ..op }.validate(&scopes).is_err());
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
