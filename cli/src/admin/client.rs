//! The HTTP client of the admin API: one bearer, path segments encoded one by one, and the
//! server's `{error, error_description, requestId}` turned into [`CliError::Api`].

use reqwest::{Method, Url};
use serde_json::Value;

use crate::args::Connection;
use crate::error::CliError;
use crate::secret::Secret;

pub(crate) struct AdminClient {
    http: reqwest::Client,
    base: Url,
    bearer: Secret,
}

impl AdminClient {
    /// A client for `conn.url` (trusting only `conn.ca_file` when given) sending `bearer`.
    pub(crate) fn new(conn: &Connection, bearer: Secret) -> Result<Self, CliError> {
        let base = Url::parse(&conn.url).map_err(|e| CliError::Usage(format!("--url {}: {e}", conn.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!("--url {}: an http(s) base URL is needed", conn.url)));
        }
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(path) = &conn.ca_file {
            let pem = std::fs::read(path).map_err(CliError::file(path))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CliError::Usage(format!("--ca-file {}: not PEM certificates: {e}", path.display())))?;
            if roots.is_empty() {
                return Err(CliError::Usage(format!("--ca-file {}: no PEM certificate in it", path.display())));
            }
            builder = builder.tls_certs_only(roots);
        }
        let http = builder.build().map_err(|e| CliError::transport(&e))?;
        Ok(Self { http, base, bearer })
    }

    /// `base/<segments…>?<query>`; each segment is percent-encoded, so an id cannot reach another
    /// route. An empty, `.` or `..` id is refused: the URL parser would drop or climb it, and
    /// `apps delete --zone Z ..` would then archive the zone.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, CliError> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(CliError::Usage(format!("`{bad}` is not an id")));
        }
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked to be a base").pop_if_empty().extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends the request; the JSON answer (`Null` for an empty one) or the API's refusal.
    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let mut req = self.http.request(method, self.url(segments, query)?).bearer_auth(self.bearer.expose());
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| CliError::transport(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| CliError::transport(&e))?;
        let json = if text.trim().is_empty() { Ok(Value::Null) } else { serde_json::from_str::<Value>(&text) };
        match (status.is_success(), json) {
            (true, Ok(v)) => Ok(v),
            (true, Err(_)) => Err(CliError::Transport(format!("{status} from {}: not an API answer: {}", self.base, excerpt(&text)))),
            (false, Ok(v)) if v["error"].is_string() => Err(refusal(status, &v)),
            // A refusal without the API's error object (a framework rejection, a proxy's page).
            (false, _) => {
                Err(CliError::Api { status, code: None, description: Some(excerpt(&text)).filter(|t| !t.is_empty()), request_id: None })
            }
        }
    }

    pub(crate) async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, CliError> {
        self.call(Method::GET, segments, query, None).await
    }

    pub(crate) async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Value, CliError> {
        self.call(Method::POST, segments, &[], body).await
    }

    pub(crate) async fn delete(&self, segments: &[&str]) -> Result<Value, CliError> {
        self.call(Method::DELETE, segments, &[], None).await
    }
}

fn refusal(status: reqwest::StatusCode, body: &Value) -> CliError {
    let text = |k: &str| body[k].as_str().map(str::to_owned);
    CliError::Api {
        status,
        code: text("error"),
        description: text("error_description"),
        request_id: text("requestId").or_else(|| text("request_id")),
    }
}

/// The start of a body that is not the API's (a proxy's HTML page, say), on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str) -> AdminClient {
        let conn = Connection { url: url.into(), token: None, token_file: None, ca_file: None };
        AdminClient::new(&conn, Secret::resolve(Some("t".into()), None, "admin token", "").unwrap()).unwrap()
    }

    #[test]
    fn an_id_stays_one_path_segment() {
        let c = client("http://cp:8080/prefix/");
        assert_eq!(c.url(&["v1", "zones", "a/b?c#d"], &[]).unwrap().as_str(), "http://cp:8080/prefix/v1/zones/a%2Fb%3Fc%23d");
        assert_eq!(
            c.url(&["v1", "zones"], &[("cursor", "x&y=z".into())]).unwrap().as_str(),
            "http://cp:8080/prefix/v1/zones?cursor=x%26y%3Dz"
        );
        for climbing in ["..", ".", ""] {
            let e = c.url(&["v1", "zones", "z", "applications", climbing], &[]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "`{climbing}` never reaches the zone's own route");
        }
    }
}
