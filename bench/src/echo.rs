//! The echo upstream.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;
use axum::response::IntoResponse;

/// Serves the echo on `addr` until killed.
pub(crate) async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().fallback(echo);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("echo upstream listening on {addr}");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn echo(req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned().into())).collect();
    let out = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body.len(),
    });
    ([(header::CONTENT_TYPE, "application/json")], out.to_string())
}
