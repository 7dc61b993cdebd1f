//! OpenTelemetry trace export over OTLP/HTTP (protobuf), off unless an endpoint is configured.
//!
//! Spans are not produced by instrumenting the request path: a request that is not exported
//! costs nothing more. The path already measures its phases (`gateway::trace::Timings`); at the
//! end of a request those measurements become finished spans, with the same trace and span ids
//! the logs and the `traceparent` sent onward carry, handed to the SDK's batch processor, which
//! exports them from a thread of its own. A full queue drops spans (counted by the SDK), never
//! blocks a request.
//!
//! Settings are the OpenTelemetry ones: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended), `OTEL_SERVICE_NAME`. Production takes an
//! http endpoint only on loopback (a collector beside the process); anything else must be https.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor};

use crate::config_env::{Mode, Reader};

/// Where spans go.
#[derive(Clone, Debug)]
pub struct OtelConfig {
    /// The OTLP/HTTP traces URL.
    pub endpoint: String,
    /// `service.name` of every span.
    pub service_name: String,
}

impl OtelConfig {
    /// Reads the OpenTelemetry variables; `None` when no endpoint is set. Problems go to `r`.
    pub fn read(r: &mut Reader<'_>, mode: Mode, default_service: &str) -> Option<Self> {
        let (name, endpoint) = match (r.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), r.optional("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(e), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e),
            (None, Some(base)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/'))),
            (None, None) => return None,
        };
        match url::Url::parse(&endpoint) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && (mode == Mode::Dev || is_loopback(&u)) => {}
            Ok(u) if u.scheme() == "http" => r.problem(name, "must be https in production, or http to a collector on loopback"),
            _ => r.problem(name, "must be an http(s) URL"),
        }
        Some(Self { endpoint, service_name: r.string("OTEL_SERVICE_NAME", default_service) })
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// One finished span, in the ids the logs carry.
pub struct FinishedSpan {
    pub trace_id: u128,
    pub span_id: u64,
    /// The parent's span id; 0 for a root.
    pub parent_span_id: u64,
    /// Whether the parent is in another process (the caller's span).
    pub parent_is_remote: bool,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub duration: Duration,
    pub attributes: Vec<KeyValue>,
    /// The operation failed (a refusal is not a failure: it is the gateway working).
    pub error: bool,
}

/// The calling span, from a valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl Caller {
    /// Reads a valid `traceparent`.
    pub fn of(traceparent: &str) -> Option<Self> {
        let t = crate::trace_context::TraceParent::parse(traceparent)?;
        Some(Self {
            trace_id: u128::from_str_radix(t.trace_id, 16).ok()?,
            span_id: u64::from_str_radix(t.parent_id, 16).ok()?,
            sampled: t.sampled(),
        })
    }
}

/// The exporter: a batch processor over the OTLP/HTTP exporter.
pub struct Exporter {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl Exporter {
    /// Starts the export thread. The HTTP requests run on a runtime of their own, so exporting
    /// never competes with the request path's workers.
    pub fn start(cfg: &OtelConfig, scope: &'static str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().thread_name("otlp-export").build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new().name("otlp-export".into()).spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        let client = Client { http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?, runtime: handle };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.endpoint.clone())
            .with_http_client(client)
            .build()?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&Resource::builder().with_service_name(cfg.service_name.clone()).build());
        let scope = InstrumentationScope::builder(scope).with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Self { processor, scope })
    }

    /// Queues `span` for export.
    pub fn record(&self, span: FinishedSpan) {
        let flags = TraceFlags::SAMPLED;
        let context = SpanContext::new(TraceId::from(span.trace_id), SpanId::from(span.span_id), flags, false, TraceState::default());
        self.processor.on_end(SpanData {
            span_context: context,
            parent_span_id: SpanId::from(span.parent_span_id),
            parent_span_is_remote: span.parent_is_remote,
            span_kind: span.kind,
            name: span.name,
            start_time: span.start,
            end_time: span.start + span.duration,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if span.error { Status::error("") } else { Status::Unset },
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// A server span for one request the process answered: a child of `caller` when one came (an
    /// unsampled caller exports nothing), else the root of a new trace.
    #[allow(clippy::too_many_arguments)]
    pub fn server_span(
        &self,
        caller: Option<Caller>,
        method: &http::Method,
        path: &str,
        request_id: &str,
        status: u16,
        start: SystemTime,
        took: Duration,
    ) {
        if caller.is_some_and(|c| !c.sampled) {
            return;
        }
        let attributes = vec![
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("caracal.request_id", request_id.to_owned()),
        ];
        self.record(FinishedSpan {
            trace_id: caller.map_or_else(|| fastrand::u128(1..), |c| c.trace_id),
            span_id: fastrand::u64(1..),
            parent_span_id: caller.map_or(0, |c| c.span_id),
            parent_is_remote: caller.is_some(),
            name: method.as_str().to_owned().into(),
            kind: SpanKind::Server,
            start,
            duration: took,
            attributes,
            error: status >= 500,
        });
    }

    /// Exports what is queued (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.processor.force_flush() {
            tracing::warn!(error = %e, "trace export: flush failed");
        }
    }
}

/// reqwest 0.13 (the client both binaries already carry) behind the exporter's HTTP interface.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let http = self.http.clone();
        // The batch processor drives this future on its own thread, outside any runtime.
        let answer = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let resp = http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = answer.await??;
        Ok(http::Response::builder().status(status).body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_env::Source;

    struct Vars(Vec<(&'static str, &'static str)>);
    impl Source for Vars {
        fn get(&self, name: &str) -> Option<String> {
            self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        }
    }

    fn read(vars: &[(&'static str, &'static str)], mode: Mode) -> (Option<OtelConfig>, bool) {
        let src = Vars(vars.to_vec());
        let mut r = Reader::new(&src);
        let cfg = OtelConfig::read(&mut r, mode, "caracal-gateway");
        (cfg, r.finish().is_err())
    }

    #[test]
    fn off_without_an_endpoint_and_checked_with_one() {
        assert!(read(&[], Mode::Production).0.is_none());
        let (c, bad) = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.internal:4318/")], Mode::Production);
        assert_eq!(c.unwrap().endpoint, "https://otel.internal:4318/v1/traces");
        assert!(!bad);
        let (c, _) =
            read(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/x"), ("OTEL_SERVICE_NAME", "edge-1")], Mode::Production);
        let c = c.unwrap();
        assert_eq!((c.endpoint.as_str(), c.service_name.as_str()), ("http://127.0.0.1:4318/x", "edge-1"), "a collector on loopback");
        assert!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel.internal:4318")], Mode::Production).1, "plaintext off the host");
        assert!(!read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel.internal:4318")], Mode::Dev).1);
        assert!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4318")], Mode::Dev).1);
    }
}
