//! What one request of a load run sends, and how it gets its credential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Method};
use http_body_util::Full;

use crate::client::Conn;
use crate::stack::mint::{MandatePool, Minter};

/// Routing header every governed request carries.
pub(crate) const RESOURCE_HEADER: &str = "x-caracal-resource";

/// How each request gets its bearer.
pub(crate) enum Auth {
    /// No credential (direct, plain proxies).
    None,
    /// Cycles through a fixed set: stateless JWT checks (Envoy) accept a token many times.
    Cycle(Vec<HeaderValue>, AtomicUsize),
    /// One pre-minted single-use mandate per request; the run ends when the pool is empty.
    Consume(Arc<MandatePool>),
    /// A gateway mandate minted at the STS right before each request (the governed loop, S4).
    Mint(Arc<Minter>),
}

/// The request a load run repeats.
pub(crate) struct Workload {
    pub(crate) target: SocketAddr,
    pub(crate) path: String,
    /// `X-Caracal-Resource` for gateway requests.
    pub(crate) resource: Option<HeaderValue>,
    pub(crate) auth: Auth,
}

/// A worker's connections: the target, and the STS for [`Auth::Mint`].
pub(crate) struct Worker {
    conn: Conn,
    sts: Option<Conn>,
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Any other status (for S4, a refused mint counts here too).
    Status(u16),
    /// No HTTP answer (connect, reset, protocol error).
    Transport,
    /// The mandate pool is empty: the run stops here.
    Exhausted,
}

impl Workload {
    /// A workload without credentials.
    pub(crate) fn plain(target: SocketAddr, path: &str) -> Self {
        Self { target, path: path.to_owned(), resource: None, auth: Auth::None }
    }

    /// Fresh connections for one worker task.
    pub(crate) fn worker(&self) -> Worker {
        let sts = match &self.auth {
            Auth::Mint(m) => Some(Conn::new(m.sts())),
            _ => None,
        };
        Worker { conn: Conn::new(self.target), sts }
    }

    /// Sends one request and reads its answer.
    pub(crate) async fn call(&self, w: &mut Worker) -> Outcome {
        let bearer = match &self.auth {
            Auth::None => None,
            Auth::Cycle(tokens, next) => Some(tokens[next.fetch_add(1, Ordering::Relaxed) % tokens.len()].clone()),
            Auth::Consume(pool) => match pool.take() {
                Some(b) => Some(b),
                None => return Outcome::Exhausted,
            },
            Auth::Mint(minter) => match minter.mint(w.sts.as_mut().expect("mint workers have an STS connection")).await {
                Ok(token) => Some(bearer(&token)),
                Err(e) => return e.outcome(),
            },
        };
        let mut req = w.conn.request(Method::GET, &self.path);
        if let Some(b) = bearer {
            req = req.header(AUTHORIZATION, b);
        }
        if let Some(r) = &self.resource {
            req = req.header(RESOURCE_HEADER, r.clone());
        }
        let req = req.body(Full::new(Bytes::new())).expect("request parts are valid");
        match w.conn.drain(req).await {
            Ok(s) if s.is_success() => Outcome::Ok,
            Ok(s) => Outcome::Status(s.as_u16()),
            Err(_) => Outcome::Transport,
        }
    }
}

/// `Bearer <token>` as a header value.
pub(crate) fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("tokens are header-safe base64url")
}
