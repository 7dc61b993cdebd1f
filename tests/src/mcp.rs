//! Real MCP software for the MCP tests: upstream servers as processes, the official Python client
//! as a scripted driver, and raw MCP requests through the gateway.
//!
//! * [`McpUpstream::everything`]: `@modelcontextprotocol/server-everything` (TS SDK; 2025-11-25 and
//!   older, sessions, always SSE), pinned in `tests/mcp/package-lock.json`, run by `node` from
//!   `CARACAL_MCP_NODE_DIR`.
//! * [`McpUpstream::python`]: `tests/mcp/server.py`, an `mcp` 2.3.0 `MCPServer` (legacy path with
//!   sessions and SSE or JSON answers, and the 2026-07-28 path), run by `CARACAL_MCP_PYTHON`.
//! * [`run_client`]: `tests/mcp/client.py`, the official `mcp` 2.3.0 client minting a fresh gateway
//!   mandate for every HTTP request, driven by a [`ClientScript`].
//! * [`McpRaw`]: hand-made MCP POSTs (and a session's `GET` stream and `DELETE`) through the
//!   gateway, with the answer's JSON-RPC messages read from JSON or SSE ([`sse_messages`]).
//!
//! `deploy/local/test.sh` installs both into `.local/` and exports the two variables. Tests call
//! [`available`] first: without the variables they are skipped with a message, except under
//! `CI=true`, where a missing tool is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::endpoint::stable_port;
use crate::infra::scratch_dir;
use crate::stack::{Demo, Stack};

/// Where `npm ci` put `@modelcontextprotocol/server-everything`.
pub const NODE_DIR_ENV: &str = "CARACAL_MCP_NODE_DIR";
/// The interpreter of the venv with `mcp` 2.3.0.
pub const PYTHON_ENV: &str = "CARACAL_MCP_PYTHON";
/// The scope of the resources [`resource_body`] declares.
pub const SCOPE: &str = "mcp.use";
/// The MCP endpoint's path on both servers (and on the gateway, see [`resource_body`]).
pub const PATH: &str = "/mcp";

/// Whether the MCP tools are installed. When they are not, prints why and returns false (the test
/// then returns early); under `CI=true` it panics instead, since CI installs them.
pub fn available() -> bool {
    let missing: Vec<&str> = [NODE_DIR_ENV, PYTHON_ENV].into_iter().filter(|v| std::env::var_os(v).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} unset: run the suite with deploy/local/test.sh, which installs the MCP servers and client", missing.join(", "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    false
}

fn env_path(var: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(var).unwrap_or_else(|| panic!("{var} is unset (call mcp::available() first)")))
}

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

/// How the Python server answers (its CLI flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonOptions {
    /// Legacy requests answered with `application/json` instead of SSE (`--json`).
    pub json_response: bool,
    /// No `Mcp-Session-Id` on the legacy path (`--stateless`).
    pub stateless: bool,
}

/// Which server a [`McpUpstream`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum McpServer {
    /// `@modelcontextprotocol/server-everything streamableHttp`.
    Everything,
    /// `tests/mcp/server.py`.
    Python(PythonOptions),
}

/// An MCP server process on `127.0.0.1:<port>`, endpoint [`PATH`]; killed on drop.
pub struct McpUpstream {
    pub server: McpServer,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl McpUpstream {
    /// server-everything with a clean environment (PATH, HOME, PORT only: its `get-env` tool
    /// returns its environment). It binds every interface and does not check `Host`.
    pub async fn everything() -> Self {
        Self::start(McpServer::Everything).await
    }

    /// The Python server, legacy path with sessions and SSE answers (and the 2026-07-28 path).
    pub async fn python() -> Self {
        Self::start(McpServer::Python(PythonOptions::default())).await
    }

    /// The Python server with `opts`.
    pub async fn python_with(opts: PythonOptions) -> Self {
        Self::start(McpServer::Python(opts)).await
    }

    /// `n` processes of `server`, each on its own port (replicas behind one resource).
    pub async fn replicas(server: McpServer, n: usize) -> Vec<Self> {
        futures_util::future::join_all((0..n).map(|_| Self::start(server))).await
    }

    /// Starts `server` on a free port (below the ephemeral range, so [`McpUpstream::restart`]
    /// finds it free) and waits until it accepts connections.
    pub async fn start(server: McpServer) -> Self {
        let mut u = Self { server, port: stable_port(), dir: scratch_dir("mcp-upstream"), child: None };
        u.restart().await;
        u
    }

    /// `http://127.0.0.1:<port>`: a resource's upstream URL (the gateway appends the request path).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>/mcp`: the server's own MCP endpoint (for direct requests).
    pub fn url(&self) -> String {
        format!("{}{PATH}", self.base_url())
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// What reached the Python server, one entry per tool call, prompt get and resource read, in
    /// order: `"tools/call echo"`, `"prompts/get greeting"`, `"resources/read docs://readme"`.
    /// Always empty for server-everything (it records nothing).
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.calls_file()).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn calls_file(&self) -> PathBuf {
        self.dir.join("calls.txt")
    }

    /// Starts the process (again) on its port; returns once it accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the MCP server on {} is running", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).expect("server log");
        let mut cmd = match self.server {
            McpServer::Everything => {
                let index = env_path(NODE_DIR_ENV).join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
                let mut c = Command::new("node");
                c.env_clear().arg(index).arg("streamableHttp").env("PORT", self.port.to_string());
                c
            }
            McpServer::Python(opts) => {
                let mut c = Command::new(env_path(PYTHON_ENV));
                c.env_clear().arg(tests_dir().join("server.py")).args(["--port", &self.port.to_string()]);
                c.arg("--calls-file").arg(self.calls_file());
                if opts.json_response {
                    c.arg("--json");
                }
                if opts.stateless {
                    c.arg("--stateless");
                }
                c
            }
        };
        // A clean environment (set above, before PORT): server-everything's `get-env` tool returns it.
        let child = cmd
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", self.server));
        self.child = Some(child);
        self.wait_listening(Duration::from_secs(30)).await;
    }

    async fn wait_listening(&mut self, within: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{:?} exited with {status} before listening:\n{}", self.server, self.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            assert!(start.elapsed() < within, "{:?} not listening on {} after {within:?}:\n{}", self.server, self.port, self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the listener, every open stream and (for sessions) all session state die at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The admin API body of a resource `identifier` in front of `upstreams` (one: `upstream_url`;
/// more: `endpoints`, round robin unless the caller sets `load_balancing`), scope [`SCOPE`], the
/// MCP endpoint's `POST`, `GET` (server stream) and `DELETE` (end of session) declared.
pub fn resource_body(identifier: &str, upstreams: &[&McpUpstream]) -> Value {
    assert!(!upstreams.is_empty(), "a resource needs an upstream");
    let operations: Vec<Value> = ["POST", "GET", "DELETE"].iter().map(|m| json!({"method": m, "path": PATH, "scope": SCOPE})).collect();
    let mut body = json!({"identifier": identifier, "scopes": [SCOPE], "operations": operations});
    if let [one] = upstreams {
        body["upstream_url"] = one.base_url().into();
    } else {
        body["endpoints"] = upstreams.iter().map(|u| json!({"url": u.base_url()})).collect();
    }
    body
}

/// Creates the resource of [`resource_body`] (or a body the caller changed) in `d`'s zone.
pub async fn add_resource(s: &Stack, d: &Demo, body: Value) -> Value {
    s.admin_ok("POST", &format!("/v1/zones/{}/resources", d.zone_id), &d.admin, Some(body), 201).await
}

/// How the client negotiates (the SDK's `Client(mode=…)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// `initialize` handshake, sessions, 2025-11-25 framing; no `Mcp-Method` headers.
    #[serde(rename = "legacy")]
    Legacy,
    /// 2026-07-28 adopted at once: no sessions, `Mcp-Method`/`Mcp-Name` headers.
    #[serde(rename = "2026-07-28")]
    V2026,
    /// `server/discover` first, `initialize` when the server does not know it.
    #[serde(rename = "auto")]
    Auto,
}

/// One operation of a [`ClientScript`].
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    ListTools,
    CallTool { name: String, arguments: Value },
    ListPrompts,
    GetPrompt { name: String, arguments: Value },
    ListResources,
    ReadResource { uri: String },
}

impl Step {
    /// `tools/call name` with `arguments` (a JSON object).
    pub fn call_tool(name: &str, arguments: Value) -> Self {
        Self::CallTool { name: name.into(), arguments }
    }

    /// `prompts/get name` with `arguments` (string values).
    pub fn get_prompt(name: &str, arguments: Value) -> Self {
        Self::GetPrompt { name: name.into(), arguments }
    }

    /// `resources/read uri`.
    pub fn read_resource(uri: &str) -> Self {
        Self::ReadResource { uri: uri.into() }
    }
}

/// What the client needs from the STS to mint its mandates.
#[derive(Clone, Debug, Serialize)]
pub struct StsAccess {
    pub url: String,
    pub zone_id: String,
    pub application_id: String,
    pub client_secret: String,
    /// The scope of each gateway mandate.
    pub scope: String,
    /// A session mandate to mint from; `None`: the client mints one with its credentials.
    pub session_mandate: Option<String>,
    /// The test CA when the control plane serves TLS.
    pub ca_file: Option<PathBuf>,
}

/// The script `tests/mcp/client.py` runs (see that file for the wire format).
#[derive(Clone, Debug, Serialize)]
pub struct ClientScript {
    /// The MCP endpoint on the gateway (`<gw_url>/mcp`).
    pub gateway_url: String,
    /// Sent as `X-Caracal-Resource` and minted for.
    pub resource: String,
    pub sts: StsAccess,
    pub mode: Mode,
    pub steps: Vec<Step>,
    /// Per step, in the client (a hung step is reported as an error, the next one runs).
    pub step_timeout_seconds: u64,
    /// The whole run, enforced here (the client is killed).
    #[serde(skip)]
    pub timeout: Duration,
}

impl ClientScript {
    /// A script against `s`'s gateway for `resource`, as `d`'s application with scope [`SCOPE`].
    pub fn new(s: &Stack, d: &Demo, resource: &str, mode: Mode, steps: Vec<Step>) -> Self {
        Self {
            gateway_url: format!("{}{PATH}", s.gw_url),
            resource: resource.into(),
            sts: StsAccess {
                url: s.cp_url.clone(),
                zone_id: d.zone_id.clone(),
                application_id: d.app_id.clone(),
                client_secret: d.secret.clone(),
                scope: SCOPE.into(),
                session_mandate: None,
                ca_file: s.pki.as_ref().map(|p| p.ca.clone()),
            },
            mode,
            steps,
            step_timeout_seconds: 10,
            timeout: Duration::from_secs(40),
        }
    }
}

/// What one client run printed.
#[derive(Clone, Debug)]
pub struct ClientRun {
    /// One per step run: `{step, op, ok: true, result}` or `{step, op, ok: false, error: {type, code, message}}`.
    pub steps: Vec<Value>,
    /// Gateway mandates minted.
    pub mints: u64,
    /// Every HTTP request the SDK made, in order: `{method, rpc_method, mcp_method_header, status, content_type}`.
    pub requests: Vec<Value>,
    /// Set when the connection itself failed (`{type, code, message}`); steps after it are missing.
    pub fatal: Option<Value>,
    /// The client's stderr (for assertion messages).
    pub stderr: String,
}

impl ClientRun {
    /// Step `i`'s result; panics with the step's error when it failed.
    pub fn result(&self, i: usize) -> &Value {
        let step = self.steps.get(i).unwrap_or_else(|| panic!("step {i} did not run: {self:#?}"));
        assert_eq!(step["ok"], true, "step {i} failed: {step}\n{self:#?}");
        &step["result"]
    }

    /// Step `i`'s error `{type, code, message}`; panics when it succeeded.
    pub fn error(&self, i: usize) -> &Value {
        let step = self.steps.get(i).unwrap_or_else(|| panic!("step {i} did not run: {self:#?}"));
        assert_eq!(step["ok"], false, "step {i} succeeded: {step}");
        &step["error"]
    }

    /// The names in step `i`'s `tools/list` or `prompts/list` result (or the URIs of a `resources/list`).
    pub fn names(&self, i: usize) -> Vec<String> {
        let r = self.result(i);
        let (list, key) = if let Some(t) = r.get("tools") {
            (t, "name")
        } else if let Some(p) = r.get("prompts") {
            (p, "name")
        } else {
            (&r["resources"], "uri")
        };
        list.as_array().into_iter().flatten().filter_map(|e| e[key].as_str().map(str::to_owned)).collect()
    }

    /// The text of the first content item of step `i`'s result (`tools/call`), or of the first
    /// message (`prompts/get`) or content (`resources/read`).
    pub fn text(&self, i: usize) -> String {
        let r = self.result(i);
        let text = r["content"][0]["text"].as_str().or(r["messages"][0]["content"]["text"].as_str()).or(r["contents"][0]["text"].as_str());
        text.unwrap_or_else(|| panic!("no text in step {i}: {r}")).to_owned()
    }

    /// The HTTP methods of the requests (`POST`, `GET`, `DELETE`), in order.
    pub fn http_methods(&self) -> Vec<&str> {
        self.requests.iter().filter_map(|r| r["method"].as_str()).collect()
    }
}

/// Runs `script` with `tests/mcp/client.py`. Panics with the client's output when it crashes, prints
/// no summary or runs past `script.timeout`; a failed step or connection is data in the result.
pub async fn run_client(script: &ClientScript) -> ClientRun {
    use tokio::io::AsyncWriteExt;
    let input = serde_json::to_vec(script).unwrap();
    let mut child = tokio::process::Command::new(env_path(PYTHON_ENV))
        .arg(tests_dir().join("client.py"))
        // No proxy or SSL variables from the test's environment reach httpx2.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tests/mcp/client.py");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(script.timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("tests/mcp/client.py did not finish within {:?}", script.timeout))
        .expect("run tests/mcp/client.py");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    let crashed = || format!("tests/mcp/client.py failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(out.status.success(), "{}", crashed());
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", crashed()))).collect();
    let (summary, steps) = lines.split_last().unwrap_or_else(|| panic!("{}", crashed()));
    let summary = summary.get("summary").unwrap_or_else(|| panic!("no summary line\n{}", crashed()));
    ClientRun {
        steps: steps.to_vec(),
        mints: summary["mints"].as_u64().unwrap_or(0),
        requests: summary["requests"].as_array().cloned().unwrap_or_default(),
        fatal: Some(summary["fatal"].clone()).filter(|f| !f.is_null()),
        stderr,
    }
}

/// An MCP answer through the gateway: the HTTP answer and the JSON-RPC messages in its body (one
/// for `application/json`, one per non-empty `data` for `text/event-stream`).
#[derive(Debug)]
pub struct McpAnswer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub messages: Vec<Value>,
}

impl McpAnswer {
    /// Reads `r` whole: the JSON-RPC messages of a JSON (one, or a batch's array) or SSE body.
    pub async fn read(r: reqwest::Response) -> Self {
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let text = r.text().await.unwrap_or_default();
        let sse = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"));
        let messages = if sse {
            sse_messages(&text)
        } else {
            serde_json::from_str::<Value>(&text).map(|v| if let Value::Array(a) = v { a } else { vec![v] }).unwrap_or_default()
        };
        Self { status, headers, text, messages }
    }

    /// The `Content-Type`, without parameters.
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).unwrap_or("").trim()
    }

    /// The JSON-RPC message answering request `id`.
    pub fn response(&self, id: i64) -> &Value {
        self.messages.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("no answer to id {id}: {self:#?}"))
    }
}

/// The JSON-RPC messages in an SSE body: each event's `data` lines joined with `\n` and parsed;
/// events without data (priming events), comments, `id:`/`event:`/`retry:` are skipped. Any line
/// ending (LF, CRLF, CR) is accepted.
pub fn sse_messages(text: &str) -> Vec<Value> {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut messages = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for line in normalized.split('\n').chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty() {
                let joined = data.join("\n");
                if !joined.trim().is_empty() {
                    messages.push(serde_json::from_str(&joined).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {joined}")));
                }
                data.clear();
            }
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    messages
}

/// Hand-made MCP requests through the gateway for one resource: each POST carries a fresh gateway
/// mandate (minted from one session mandate) and `X-Caracal-Resource`.
pub struct McpRaw<'a> {
    pub stack: &'a Stack,
    pub demo: &'a Demo,
    pub resource: String,
    pub scope: String,
    session: String,
}

impl<'a> McpRaw<'a> {
    /// Mints the session mandate; every request gets a gateway mandate with scope [`SCOPE`].
    pub async fn new(stack: &'a Stack, demo: &'a Demo, resource: &str) -> Self {
        let session = stack.session(demo).await;
        Self { stack, demo, resource: resource.into(), scope: SCOPE.into(), session }
    }

    /// The session mandate every request's gateway mandate is minted from (its `sid` is the root
    /// a revocation names).
    pub fn session_mandate(&self) -> &str {
        &self.session
    }

    /// `method /mcp` through the gateway with a fresh gateway mandate, `X-Caracal-Resource` and `headers`.
    async fn request(&self, method: reqwest::Method, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mandate = self.stack.mandate_for(self.demo, &self.session, &self.resource, &self.scope).await;
        let mut req = self
            .stack
            .http
            .request(method, format!("{}{PATH}", self.stack.gw_url))
            .bearer_auth(mandate)
            .header("x-caracal-resource", &self.resource);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    }

    /// `POST /mcp` with `body` as given (malformed bodies included), `Content-Type:
    /// application/json`, `Accept: application/json, text/event-stream` and `headers`.
    pub async fn post_bytes(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> McpAnswer {
        McpAnswer::read(self.send(body, headers).await).await
    }

    /// [`McpRaw::post_bytes`], answered as soon as the header arrives: an SSE answer (progress
    /// of a long call) is the caller's to read as it streams.
    pub async fn send(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> reqwest::Response {
        let defaults = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
        let req = self.request(reqwest::Method::POST, &[&defaults[..], headers].concat()).await.body(body);
        req.send().await.expect("MCP request through the gateway")
    }

    /// A 2025-11-25 session's `GET /mcp` (the server's stream), answered as soon as its header
    /// arrives: the body is the caller's to read (`chunk()`), for as long as the stream stays open.
    pub async fn open_stream(&self, session: &str) -> reqwest::Response {
        let headers = [("accept", "text/event-stream"), ("mcp-protocol-version", "2025-11-25"), ("mcp-session-id", session)];
        self.request(reqwest::Method::GET, &headers).await.send().await.expect("GET /mcp through the gateway")
    }

    /// A 2025-11-25 session's `DELETE /mcp` (the client ends the session).
    pub async fn delete_session(&self, session: &str) -> McpAnswer {
        let headers = [("mcp-protocol-version", "2025-11-25"), ("mcp-session-id", session)];
        McpAnswer::read(self.request(reqwest::Method::DELETE, &headers).await.send().await.expect("DELETE /mcp through the gateway")).await
    }

    /// [`McpRaw::post_bytes`] with a JSON body.
    pub async fn post(&self, body: &Value, headers: &[(&str, &str)]) -> McpAnswer {
        self.post_bytes(serde_json::to_vec(body).unwrap(), headers).await
    }

    /// A 2025-11-25 `initialize` (id 0) and `notifications/initialized`; returns the session id
    /// the server assigned (`None` for a stateless server).
    pub async fn initialize(&self) -> Option<String> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "caracal-e2e", "version": "1"}}});
        let a = self.post(&init, &[]).await;
        assert_eq!(a.status, 200, "initialize: {a:#?}");
        assert!(a.response(0)["result"]["protocolVersion"].is_string(), "initialize: {a:#?}");
        let session = a.headers.get("mcp-session-id").map(|v| v.to_str().unwrap().to_owned());
        let mut headers = vec![("mcp-protocol-version", "2025-11-25")];
        if let Some(sid) = &session {
            headers.push(("mcp-session-id", sid));
        }
        let note = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), &headers).await;
        assert_eq!(note.status, 202, "notifications/initialized: {note:#?}");
        session
    }

    /// A legacy (2025-11-25) request `method` with id `id`, in session `session`.
    pub async fn legacy_request(&self, session: Option<&str>, id: i64, method: &str, params: Value) -> McpAnswer {
        let mut headers = vec![("mcp-protocol-version", "2025-11-25")];
        if let Some(sid) = session {
            headers.push(("mcp-session-id", sid));
        }
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}), &headers).await
    }

    /// A 2026-07-28 request `method` with id `id` (no session; version in `_meta` and the header;
    /// `Mcp-Method`, and `Mcp-Name` from `params.name`/`params.uri` for the name-bearing methods).
    pub async fn modern_request(&self, id: i64, method: &str, mut params: Value) -> McpAnswer {
        params["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2026-07-28".into();
        params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
        let name = params.get("name").or(params.get("uri")).and_then(Value::as_str).map(str::to_owned);
        let mut headers = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", method)];
        if let Some(n) = &name {
            headers.push(("mcp-name", n));
        }
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}), &headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_follow_the_event_stream_grammar() {
        let text = "id: p\ndata: \n\n: a comment\r\nevent: message\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nretry: 5\rdata: {\"b\":2}";
        assert_eq!(sse_messages(text), vec![json!({"a": 1}), json!({"b": 2})]);
    }
}
