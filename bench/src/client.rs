//! A lean HTTP/1.1 client: one kept-alive connection, reopened after a failure or a `close`.
//!
//! The load generator owns one [`Conn`] per worker task, so a measured request never waits for a
//! pool, and the generator's cost per request stays small next to the proxies it measures.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("connect {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
}

/// One connection to `addr`.
pub(crate) struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection that opens on first use.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string()).expect("a socket address is a valid header value");
        Self { addr, host, sender: None }
    }

    /// A request with `Host` set for this connection.
    pub(crate) fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder().method(method).uri(path).header(HOST, self.host.clone())
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| ClientError::Connect(self.addr, e))?;
            stream.set_nodelay(true).map_err(|e| ClientError::Connect(self.addr, e))?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await; // ends when the peer closes; the next request reconnects
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await?;
        Ok(sender)
    }

    /// Sends `req`; the body is left to the caller.
    pub(crate) async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, ClientError> {
        let result = self.ready().await?.send_request(req).await;
        if result.is_err() {
            self.sender = None;
        }
        Ok(result?)
    }

    /// Sends `req` and reads the whole body.
    pub(crate) async fn fetch(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), ClientError> {
        let resp = self.send(req).await?;
        let status = resp.status();
        match resp.into_body().collect().await {
            Ok(body) => Ok((status, body.to_bytes())),
            Err(e) => {
                self.sender = None;
                Err(e.into())
            }
        }
    }

    /// Sends `req` and discards the body frame by frame (no buffering).
    pub(crate) async fn drain(&mut self, req: Request<Full<Bytes>>) -> Result<StatusCode, ClientError> {
        let resp = self.send(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                self.sender = None;
                return Err(e.into());
            }
        }
        Ok(status)
    }
}

/// A JSON request with an optional bearer.
pub(crate) fn json(
    conn: &Conn,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Request<Full<Bytes>> {
    let mut b = conn.request(method, path);
    if let Some(t) = bearer {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            b = b.header(CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(body)).expect("request parts are valid")
}
