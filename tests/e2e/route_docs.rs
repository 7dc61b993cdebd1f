//! Every HTTP route is documented in `docs/api.md`, and everything `docs/api.md` lists is a route.
//!
//! The control plane's routes are read from its routers' source and the STS's
//! ([`caracal_e2e::routes`]): the admin API, the Coordinator, Control, the operational endpoints.
//! The gateway has no router (it matches paths in `gateway/src/admin.rs` and
//! `gateway/src/discovery.rs`), so its endpoints are listed in [`GATEWAY`], each checked against
//! that source: its literal must be there, and every path arm of the admin endpoint `match` must
//! be listed. A row of `docs/api.md` is `| METHOD | `path` | who | purpose | [doc](file.md#section) |`;
//! rows under a `## Gateway…` heading are the gateway's, the others the control plane's. Each
//! row's link must name an existing doc and heading.

use std::collections::{BTreeMap, BTreeSet};

use caracal_e2e::routes::{Route, routes_under, workspace};

/// The gateway's own endpoints: `(method, path as documented, source file, literal found there)`.
/// They answer any method; the row names the one clients use.
const GATEWAY: &[(&str, &str, &str, &str)] = &[
    ("GET", "/health", "gateway/src/admin.rs", "\"/health\""),
    ("GET", "/ready", "gateway/src/admin.rs", "\"/ready\""),
    ("GET", "/metrics", "gateway/src/admin.rs", "\"/metrics\""),
    ("GET", "/metrics.json", "gateway/src/admin.rs", "\"/metrics.json\""),
    ("POST", "/internal/revocations/reload", "gateway/src/admin.rs", "\"/internal/revocations/reload\""),
    ("GET", "/.well-known/oauth-protected-resource", "gateway/src/discovery.rs", "\"/.well-known/oauth-protected-resource\""),
    // `protected_path` accepts the prefix followed by `/…` (RFC 9728's path-inserted form).
    ("GET", "/.well-known/oauth-protected-resource/{*path}", "gateway/src/discovery.rs", "rest.starts_with('/')"),
];

/// The methods a row may name.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Which binary serves a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Service {
    ControlPlane,
    Gateway,
}

/// A row of `docs/api.md`: where it is, and the doc link of its last cell.
struct Row {
    line: usize,
    service: Service,
    route: Route,
    link: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The cells of a table line, split at unescaped `|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => out.last_mut().expect("a cell").push(chars.next().expect("peeked")),
            '|' => out.push(String::new()),
            c => out.last_mut().expect("a cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The route rows of `docs/api.md`; a row that starts with a method but is not well formed fails.
fn doc_rows(doc: &str) -> Vec<Row> {
    let mut service = Service::ControlPlane;
    let mut rows = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        let line_no = i + 1;
        if let Some(heading) = line.strip_prefix("## ") {
            service = if heading.starts_with("Gateway") { Service::Gateway } else { Service::ControlPlane };
            continue;
        }
        if !line.starts_with('|') {
            continue;
        }
        let c = cells(line);
        if !METHODS.contains(&c[0].as_str()) {
            continue;
        }
        assert_eq!(c.len(), 5, "docs/api.md:{line_no}: a route row has 5 cells (method, path, who, purpose, doc): {line}");
        let path = c[1].strip_prefix('`').and_then(|p| p.strip_suffix('`')).filter(|p| p.starts_with('/') && !p.contains('`'));
        let path = path.unwrap_or_else(|| panic!("docs/api.md:{line_no}: the path is one `/…` in backticks: {line}"));
        assert!(c[2..].iter().all(|c| !c.is_empty()), "docs/api.md:{line_no}: who, purpose and doc are filled in: {line}");
        let link = c[4].split_once("](").and_then(|(_, rest)| rest.split_once(')')).map(|(l, _)| l.to_owned());
        let link = link.unwrap_or_else(|| panic!("docs/api.md:{line_no}: the last cell links to the section describing the route: {line}"));
        rows.push(Row { line: line_no, service, route: (c[0].clone(), path.to_owned()), link });
    }
    rows
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks).
fn anchors(md: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in md.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// The routes of the source, per service: the control plane's routers (the STS's included) and the
/// gateway's endpoints, each checked against the gateway's source.
fn source_routes() -> BTreeMap<Service, Vec<Route>> {
    let mut cp = routes_under("control-plane/src");
    cp.extend(routes_under("sts/src"));
    assert!(cp.len() > 90, "the control plane's routes were found: {cp:?}");
    let mut gw = Vec::new();
    for (method, path, file, literal) in GATEWAY {
        assert!(read(file).contains(literal), "{file} no longer has {literal}: is the gateway endpoint {method} {path} gone?");
        gw.push((method.to_string(), path.to_string()));
    }
    // Every path arm of the gateway's endpoint `match` is listed (a new endpoint must be documented).
    let admin = read("gateway/src/admin.rs");
    let mut arms = 0;
    for (at, _) in admin.match_indices("\"/") {
        let literal = &admin[at + 1..];
        let Some(end) = literal.find('"') else { continue };
        let (path, after) = (&literal[..end], literal[end + 1..].trim_start());
        if after.starts_with("=>") || after.starts_with('|') {
            arms += 1;
            assert!(
                GATEWAY.iter().any(|g| g.1 == path),
                "gateway/src/admin.rs answers {path} itself: list it in GATEWAY and document it in docs/api.md"
            );
        }
    }
    assert!(arms >= 5, "the path arms of gateway/src/admin.rs were found ({arms})");
    BTreeMap::from([(Service::ControlPlane, cp), (Service::Gateway, gw)])
}

#[test]
fn route_docs_list_every_route_and_only_routes() {
    let doc = read("docs/api.md");
    let rows = doc_rows(&doc);
    let source = source_routes();
    let mut problems = Vec::new();
    for (service, routes) in &source {
        let documented: Vec<&Row> = rows.iter().filter(|r| r.service == *service).collect();
        for r in routes {
            if !documented.iter().any(|d| d.route == *r) {
                problems.push(format!("{service:?}: {} {} is served but has no row in docs/api.md", r.0, r.1));
            }
        }
        for d in &documented {
            if !routes.contains(&d.route) {
                problems.push(format!("docs/api.md:{}: {} {} is not a {service:?} route", d.line, d.route.0, d.route.1));
            }
            if let Some(first) = documented.iter().find(|o| o.route == d.route && o.line < d.line) {
                problems.push(format!("docs/api.md:{}: {} {} is listed twice (also line {})", d.line, d.route.0, d.route.1, first.line));
            }
        }
    }
    for d in &rows {
        let (file, section) = d.link.split_once('#').unwrap_or((&d.link, ""));
        let file = if file.is_empty() { "api.md" } else { file };
        let Ok(target) = std::fs::read_to_string(workspace().join("docs").join(file)) else {
            problems.push(format!("docs/api.md:{}: links to docs/{file}, which does not exist", d.line));
            continue;
        };
        if !section.is_empty() && !anchors(&target).contains(section) {
            problems.push(format!("docs/api.md:{}: docs/{file} has no heading #{section}", d.line));
        }
    }
    assert!(problems.is_empty(), "docs/api.md and the routes disagree:\n{}", problems.join("\n"));
    eprintln!("{} routes documented", rows.len());
}

#[test]
fn route_docs_reads_rows_cells_and_anchors_as_github_does() {
    assert_eq!(cells("| POST | `/a` | x | approve \\| reject | [d](d.md#s) |"), ["POST", "`/a`", "x", "approve | reject", "[d](d.md#s)"]);
    assert_eq!(anchor(" 6. Discovery — done"), "6-discovery--done");
    assert_eq!(anchor(" Named policies and manifests (the original's `/policies`)"), "named-policies-and-manifests-the-originals-policies");
    let rows = doc_rows(
        "## Control plane\n| GET | `/x` | public | p | [a](a.md#b) |\n| status | code |\n## Gateway\n| GET | `/x` | public | p | [a](#c) |\n",
    );
    let seen: Vec<_> = rows.iter().map(|r| (r.line, r.service, r.route.1.as_str(), r.link.as_str())).collect();
    assert_eq!(seen, [(2, Service::ControlPlane, "/x", "a.md#b"), (5, Service::Gateway, "/x", "#c")]);
}
