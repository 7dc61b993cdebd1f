//! A recording upstream: answers every request with 200 and remembers what it received, plus a
//! few routes with special behaviour (SSE, slow or stalled bodies, redirects, no answer at all).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Which client connection carried a request (every route, recorded before it answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    pub path: String,
    /// The gateway's side of the upstream connection.
    pub peer: SocketAddr,
}

/// The upstream and its record.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    carried: Arc<Mutex<Vec<Carried>>>,
}

impl Upstream {
    /// Starts on an ephemeral port in the current runtime.
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let carried: Arc<Mutex<Vec<Carried>>> = Arc::default();
        let app = Router::new()
            // Resources in the tests point at `<upstream>/base`.
            .route("/base/sse", axum::routing::get(sse))
            .route("/base/slow-body", axum::routing::get(slow_body))
            .route("/base/stalled-body", axum::routing::get(stalled_body))
            .route("/base/redirect", axum::routing::get(redirect))
            .route("/base/redirect-to", axum::routing::get(redirect_to))
            .route("/base/no-content", axum::routing::get(no_content))
            .route("/base/hang", axum::routing::any(hang))
            .fallback(record)
            .with_state(seen.clone())
            .layer(axum::middleware::from_fn_with_state(carried.clone(), carry));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await });
        Self { addr, seen, carried }
    }

    /// Which connection carried each request so far, in arrival order.
    pub fn carried(&self) -> Vec<Carried> {
        self.carried.lock().unwrap().clone()
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn carry(
    State(carried): State<Arc<Mutex<Vec<Carried>>>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    carried.lock().unwrap().push(Carried { path: req.uri().path().to_owned(), peer });
    next.run(req).await
}

async fn record(State(seen): State<Arc<Mutex<Vec<Seen>>>>, req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.map(|b| b.to_vec()).unwrap_or_default();
    let s = Seen {
        method: parts.method.to_string(),
        version: format!("{:?}", parts.version),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let reply = serde_json::json!({"upstream": "ok", "path": s.path});
    seen.lock().unwrap().push(s);
    axum::Json(reply)
}

/// An SSE stream: one event at once, then one every `?every_ms=` (default: never again, an idle
/// stream), up to `?count=` events (default 1,000), then the stream ends.
async fn sse(axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>) -> impl IntoResponse {
    let every = q.get("every_ms").and_then(|v| v.parse::<u64>().ok());
    let count = q.get("count").and_then(|v| v.parse::<u32>().ok()).unwrap_or(1000);
    let stream = async_stream(every, count);
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream"), (axum::http::header::CACHE_CONTROL, "no-cache")],
        axum::body::Body::from_stream(stream),
    )
}

fn async_stream(every_ms: Option<u64>, count: u32) -> impl futures_core::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for i in 0..count {
            if tx.send(Ok(axum::body::Bytes::from(format!("id: {i}\ndata: event {i}\n\n")))).await.is_err() {
                return;
            }
            if i + 1 == count {
                return;
            }
            match every_ms {
                Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
                None => std::future::pending::<()>().await,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A sized body (`?bytes=`, default 1 MiB) sent in 16 KiB chunks every `?every_ms=` (default 20).
async fn slow_body(axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>) -> impl IntoResponse {
    let total: usize = q.get("bytes").and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
    let every: u64 = q.get("every_ms").and_then(|v| v.parse().ok()).unwrap_or(20);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(16 * 1024);
            if tx.send(Ok(axum::body::Bytes::from(vec![b'x'; n]))).await.is_err() {
                return;
            }
            sent += n;
            tokio::time::sleep(std::time::Duration::from_millis(every)).await;
        }
    });
    (
        [(axum::http::header::CONTENT_LENGTH, total.to_string())],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

/// A redirect to the metadata service, which the gateway must neither follow nor pass on.
async fn redirect() -> impl IntoResponse {
    (
        axum::http::StatusCode::FOUND,
        [(axum::http::header::LOCATION, "http://169.254.169.254/latest/meta-data/"), (axum::http::header::SERVER, "leaky/1.0")],
        "moved",
    )
}

/// A redirect to `?to=` (verbatim), for the gateway's `Location` filter.
async fn redirect_to(axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>) -> impl IntoResponse {
    let to = q.get("to").cloned().unwrap_or_default();
    let mut resp = (axum::http::StatusCode::FOUND, "moved").into_response();
    if let Ok(v) = axum::http::HeaderValue::from_bytes(to.as_bytes()) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v.clone());
        resp.headers_mut().insert(axum::http::header::CONTENT_LOCATION, v);
    }
    resp
}

/// 204 without a body (and so without `Content-Length`).
async fn no_content() -> impl IntoResponse {
    axum::http::StatusCode::NO_CONTENT
}

/// Accepts the request and never answers.
async fn hang() -> impl IntoResponse {
    std::future::pending::<()>().await;
    ""
}

/// Declares `?bytes=` (default 64 KiB) but sends only `?first=` (default 1 KiB) of them, then
/// stays silent with the connection open.
async fn stalled_body(axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>) -> impl IntoResponse {
    let total: usize = q.get("bytes").and_then(|v| v.parse().ok()).unwrap_or(64 * 1024);
    let first: usize = q.get("first").and_then(|v| v.parse().ok()).unwrap_or(1024);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        if tx.send(Ok(axum::body::Bytes::from(vec![b'x'; first.min(total)]))).await.is_err() {
            return;
        }
        // Hold the sender: the body never completes.
        tx.closed().await;
    });
    (
        [(axum::http::header::CONTENT_LENGTH, total.to_string())],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}
