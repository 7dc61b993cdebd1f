//! An OTLP/HTTP trace receiver for the export tests: `POST /v1/traces` bodies decoded with the
//! OpenTelemetry project's own protobuf definitions (`opentelemetry-proto`), kept for inspection.
//! (No OpenTelemetry Collector binary can be installed from the registries these machines reach.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One received span, with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub struct Received {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
}

/// A running receiver.
pub struct Collector {
    /// `http://127.0.0.1:<port>`, the `OTEL_EXPORTER_OTLP_ENDPOINT` to give.
    pub url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

async fn traces(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> axum::http::StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else { return axum::http::StatusCode::BAD_REQUEST };
    let mut out = spans.lock().unwrap();
    for rs in req.resource_spans {
        let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
        let service = attrs
            .iter()
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            out.push(Received {
                service: service.clone(),
                name: s.name,
                trace_id: hex::encode(s.trace_id),
                span_id: hex::encode(s.span_id),
                parent_span_id: hex::encode(s.parent_span_id),
                kind: s.kind,
                attributes: s.attributes.iter().map(|a| (a.key.clone(), text(a.value.as_ref().and_then(|v| v.value.as_ref())))).collect(),
            });
        }
    }
    axum::http::StatusCode::OK
}

impl Collector {
    /// Starts listening on a loopback port.
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    /// The spans of `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }
}
