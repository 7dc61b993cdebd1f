//! The control plane's HTTP routes, read from the routers' source, for the tests that must cover
//! every route: who may call it (`tests/e2e/admin_auth.rs`) and where it is documented
//! (`tests/e2e/route_docs.rs`). Reading the source means a route added later is covered without
//! anyone remembering to list it.
//!
//! A route is a `.route(<path>, <method router>)` call. The path may be a string literal, a `&str`
//! constant of the same crate (`.route(ROUTE, …)`, `.route(metadata::TOKEN_PATH, …)`, resolved
//! from its `const NAME: &str = "…";`), or a `format!` of such constants; the method router names
//! `get`, `post`, `put`, `patch` or `delete`. Anything else panics with the file and the call, so a
//! route written some new way fails the tests instead of going unseen.

use std::path::{Path, PathBuf};

/// `(METHOD, path template)`, e.g. `("GET", "/v1/zones/{zone_id}")`.
pub type Route = (String, String);

/// The method routers a route may use, in the order their routes are reported.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every route declared in the `.rs` files directly in `dir` (relative to the workspace root),
/// not in its subfolders; files in name order.
pub fn routes_in(dir: &str) -> Vec<Route> {
    scan(&rs_files(&workspace().join(dir), false))
}

/// Every route declared in the `.rs` files under `dir` (relative to the workspace root),
/// subfolders included.
pub fn routes_under(dir: &str) -> Vec<Route> {
    scan(&rs_files(&workspace().join(dir), true))
}

fn rs_files(dir: &Path, deep: bool) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for p in entries {
        if p.is_dir() {
            if deep {
                out.extend(rs_files(&p, true));
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

fn scan(files: &[PathBuf]) -> Vec<Route> {
    let mut out = Vec::new();
    for file in files {
        let src = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let mut rest = src.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let args = split_args(rest).unwrap_or_else(|| panic!("{}: unbalanced `.route(` call: {}", file.display(), snippet(rest)));
            let [path, chain] = args.as_slice() else {
                panic!("{}: `.route(` takes a path and a method router: {}", file.display(), snippet(rest));
            };
            let path = resolve_path(file, path);
            let methods: Vec<&str> = METHODS
                .into_iter()
                .filter(|m| chain.starts_with(&format!("{m}(")) || chain.contains(&format!(" {m}(")) || chain.contains(&format!(".{m}(")))
                .collect();
            assert!(!methods.is_empty(), "{}: route {path}: no get/post/put/patch/delete in {chain:?}", file.display());
            out.extend(methods.into_iter().map(|m| (m.to_ascii_uppercase(), path.clone())));
        }
    }
    out
}

/// The first 120 characters of `s`, for a panic message.
fn snippet(s: &str) -> &str {
    s.char_indices().nth(120).map_or(s, |(i, _)| &s[..i])
}

/// The comma-separated arguments of a call whose opening `(` was just consumed, trimmed, up to the
/// `)` that closes it (string literals skipped, nested brackets kept whole); `None` if unbalanced.
fn split_args(s: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                // Skip the literal, escapes included.
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ')' => {
                args.push(s[start..i].trim().to_owned());
                return Some(args);
            }
            ',' if depth == 0 => {
                args.push(s[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// The path a `.route(` call's first argument names.
fn resolve_path(file: &Path, expr: &str) -> String {
    let bad = |why: &str| -> ! { panic!("{}: route path {expr:?}: {why}", file.display()) };
    if let Some(lit) = string_literal(expr) {
        return lit.unwrap_or_else(|| bad("a literal with escapes"));
    }
    if let Some(inner) = expr.trim_start_matches('&').strip_prefix("format!(") {
        let args = split_args(inner).unwrap_or_else(|| bad("an unbalanced format!"));
        let (fmt, values) = args.split_first().unwrap_or_else(|| bad("an empty format!"));
        let fmt = string_literal(fmt).flatten().unwrap_or_else(|| bad("format! without a plain literal"));
        let mut values = values.iter().map(|v| constant(file, v));
        let mut out = String::new();
        let mut chars = fmt.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('{', Some('{')) | ('}', Some('}')) => {
                    chars.next();
                    out.push(c);
                }
                ('{', Some('}')) => {
                    chars.next();
                    out.push_str(&values.next().unwrap_or_else(|| bad("more {} than arguments")));
                }
                ('{' | '}', _) => bad("only {} placeholders are understood"),
                _ => out.push(c),
            }
        }
        if values.next().is_some() {
            bad("more arguments than {}");
        }
        return out;
    }
    constant(file, expr)
}

/// `Some(Some(text))` for a string literal without escapes, `Some(None)` for one with escapes,
/// `None` when `expr` is not a string literal.
fn string_literal(expr: &str) -> Option<Option<String>> {
    let inner = expr.strip_prefix('"')?.strip_suffix('"')?;
    Some((!inner.contains(['\\', '"'])).then(|| inner.to_owned()))
}

/// The value of the `&str` constant `expr` (`NAME` or `module::NAME`) in the crate of `file`.
fn constant(file: &Path, expr: &str) -> String {
    let is_ident = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if !expr.split("::").all(is_ident) {
        panic!("{}: route path {expr:?} is neither a literal, a constant nor a format! of constants", file.display());
    }
    let name = expr.rsplit("::").next().unwrap_or(expr);
    let krate = file.ancestors().find(|d| d.join("Cargo.toml").is_file()).unwrap_or_else(|| panic!("{}: no crate", file.display()));
    let needle = format!("const {name}: &str = \"");
    let mut values: Vec<String> = Vec::new();
    for f in rs_files(&krate.join("src"), true) {
        let src = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        for (at, _) in src.match_indices(&needle) {
            let rest = &src[at + needle.len() - 1..];
            let end = rest[1..].find('"').map(|e| e + 2).unwrap_or_else(|| panic!("{}: unterminated {name}", f.display()));
            let value = string_literal(&rest[..end]).flatten().unwrap_or_else(|| panic!("{}: {name} is not a plain literal", f.display()));
            if !values.contains(&value) {
                values.push(value);
            }
        }
    }
    match values.as_slice() {
        [one] => one.clone(),
        [] => panic!("{}: route path constant {name} not found in {}", file.display(), krate.join("src").display()),
        many => panic!("{}: route path constant {name} has several values in its crate: {many:?}", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_at_top_level_commas_only() {
        let args = split_args(r#"&format!("{}/{{*p}}", a::B), get(f).post(g)) .route("x")"#).unwrap();
        assert_eq!(args, [r#"&format!("{}/{{*p}}", a::B)"#, "get(f).post(g)"]);
        assert_eq!(split_args(r#""/a,b)", post(h))"#).unwrap(), [r#""/a,b)""#, "post(h)"], "a literal's commas and parens are its own");
        assert!(split_args("\"/a\", get(h").is_none());
    }

    #[test]
    fn the_control_plane_and_sts_routes_are_all_read() {
        let sts = routes_under("sts/src");
        for route in [
            ("POST", "/oauth/2/token"),
            ("GET", "/.well-known/oauth-authorization-server"),
            ("GET", "/.well-known/oauth-authorization-server/{*issuer_path}"),
        ] {
            assert!(sts.iter().any(|r| (r.0.as_str(), r.1.as_str()) == route), "{route:?} (a constant or a format! of one) in {sts:?}");
        }
        let cp = routes_under("control-plane/src");
        assert!(cp.iter().any(|r| r.0 == "POST" && r.1 == "/v1/control/invoke"), "Control's `ROUTE` constant is resolved: {cp:?}");
        assert!(
            cp.iter().any(|r| r.0 == "PATCH" && r.1 == "/v1/zones/{zone_id}/resources/{id}/endpoints/{n}"),
            "subfolders are read: {cp:?}"
        );
        assert!(!routes_in("control-plane/src/api").iter().any(|r| r.1.contains("/endpoints")), "routes_in stays in its folder");
    }
}
