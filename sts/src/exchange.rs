//! `POST /oauth/2/token`: the mint flows of this STS, one module each, like the gateway's phases.
//!
//! | flow | caller proves | presents | yields |
//! |---|---|---|---|
//! | [`session`] | client secret | nothing | `use=session`, a new root session (authority record) |
//! | [`gateway`] | client secret | its own session mandate | `use=gateway`, single use at the gateway |
//! | [`delegated`] | client secret | an agent session and a delegation edge | `use=gateway` with the lineage |
//! | [`federated`] | client secret | an OpenID provider's `id_token` | `use=session`, `sub_type=user`, a user's root session |
//! | [`resource`] | the gateway's HMAC signature | a gateway mandate | `use=resource` + the upstream directive |
//! | [`visible`] | the gateway's HMAC signature | a resource mandate for an MCP listing | the listed names it may use |
//!
//! Every flow runs the same steps in the same order: authenticate the caller ([`authenticate`]),
//! verify what it presents ([`subject`]), narrow (the flow's own rules, documented in its module),
//! ask the zone's policy for every resource ([`grant`]), settle a step-up ([`step_up_gate`]), sign
//! and answer ([`sign`]). Nothing is issued without an `allow`; a zone without a policy denies.
//! Decided exchanges become evidence ([`evidence`]); unauthenticated ones are only counted.

mod authenticate;
mod delegated;
mod directive;
mod evidence;
mod federated;
mod gateway;
mod grant;
mod resource;
mod session;
mod sign;
mod step_up_gate;
mod subject;
mod visible;

use caracal_shared::exchange::TokenResponse;

use crate::Sts;
use crate::error::StsError;
use crate::form::{SubjectTokenType, TokenForm};

/// The HTTP-independent view of a token request.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    /// Correlation id (validated `X-Request-Id` or generated).
    pub request_id: &'a str,
    /// HTTP method and path, covered by the gateway signature.
    pub method: &'a str,
    pub path: &'a str,
    /// The gateway signature headers, if any of them was sent.
    pub gateway: Option<GatewaySignature<'a>>,
    /// The raw form body.
    pub body: &'a [u8],
}

/// The three `X-Caracal-Gateway-*` headers; any may be missing.
#[derive(Debug, Default)]
pub struct GatewaySignature<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    /// `X-Request-Id` as sent; must equal the form's `gateway_request_id`.
    pub request_id_header: Option<&'a str>,
}

/// Who the caller turned out to be. Only an authenticated caller's exchange is evidenced: an
/// unauthenticated one names a zone of its own choosing and must not be able to write rows there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Caller {
    #[default]
    Unauthenticated,
    /// A client whose secret matched.
    Client,
    /// The gateway, by its exchange signature.
    Gateway,
}

impl Sts {
    /// Handles one token request and records its outcome in the metrics.
    pub async fn token(&self, req: TokenRequest<'_>) -> Result<TokenResponse, StsError> {
        let timer = self.metrics.exchange_seconds.start_timer();
        let parsed = match TokenForm::parse(req.body) {
            Ok(form) if form.zone_derived => self.derive_zone(form).await,
            other => other,
        };
        let out = match parsed {
            Ok(form) => {
                let mut caller = Caller::Unauthenticated;
                // Every query of the exchange sees the form's zone only (row-level security).
                let out = caracal_shared::zone_context::zone(&form.zone_id, self.dispatch(&req, &form, &mut caller)).await;
                match caller {
                    Caller::Unauthenticated => {
                        if out.is_err() {
                            self.metrics.unauthenticated.inc();
                        }
                    }
                    Caller::Client | Caller::Gateway => self.record(&req, &form, &out).await,
                }
                out
            }
            Err(e) => Err(e),
        };
        timer.observe_duration();
        if let Err(e) = &out {
            self.metrics.denials.with_label_values(&[e.metric_label()]).inc();
            match e {
                StsError::Unavailable(cause)
                | StsError::Internal(cause)
                | StsError::PolicyEvalFailed(cause)
                | StsError::ProviderUnavailable(cause) => {
                    tracing::error!(request_id = req.request_id, error = %cause, "token exchange failed")
                }
                _ => tracing::info!(request_id = req.request_id, error = %e, "token exchange denied"),
            }
        }
        out
    }

    /// The zone of a zone-less mint: only a control key (an application with the trait
    /// `control:invoke`) may omit it, as in the original, and only with its own secret; anything
    /// else is the same `invalid_client` as a wrong secret (no oracle of which ids exist where).
    async fn derive_zone(&self, mut form: TokenForm) -> Result<TokenForm, StsError> {
        let (Some(app_id), Some(secret)) = (form.application_id.as_deref(), form.client_secret.as_deref()) else {
            return Err(StsError::InvalidClient);
        };
        let presented = caracal_shared::sig::sha256(secret.as_bytes());
        match self.zone_holding(app_id, &presented, None, true).await? {
            Some(z) => {
                form.zone_id = z;
                Ok(form)
            }
            None => {
                self.metrics.unauthenticated.inc();
                Err(StsError::InvalidClient)
            }
        }
    }

    /// Authenticates the caller, then hands over to the flow the form asks for.
    async fn dispatch(&self, req: &TokenRequest<'_>, form: &TokenForm, caller: &mut Caller) -> Result<TokenResponse, StsError> {
        let federation = form.subject_token_type == Some(SubjectTokenType::IdToken);
        if federation && req.gateway.is_some() {
            return Err(StsError::InvalidRequest("the gateway exchange takes a gateway mandate, not an id_token".into()));
        }
        if let Some(gw) = &req.gateway {
            self.verify_gateway_signature(gw, req, form).await?;
            *caller = Caller::Gateway;
            let subject = form.subject_token.as_deref().ok_or_else(|| StsError::InvalidRequest("subject_token is required".into()))?;
            return self.resource_exchange(form, subject, req.request_id).await;
        }
        let app = self.authenticate(form).await?;
        *caller = Caller::Client;
        if let (true, Some(id_token)) = (federation, form.subject_token.as_deref()) {
            return self.federate(form, &app, id_token).await;
        }
        match (form.subject_token.as_deref(), form.agent_session_id.as_deref(), form.delegation_edge_id.as_deref()) {
            (None, Some(session), Some(edge)) => self.delegated_mint(form, &app, session, edge, req.request_id).await,
            (None, Some(session), None) => self.session_mint(form, &app, Some(session), req.request_id).await,
            (_, None, Some(_)) => Err(StsError::InvalidRequest("delegation_edge_id needs agent_session_id".into())),
            (Some(_), Some(_), None) => Err(StsError::InvalidRequest("a session-bound mint takes no subject_token".into())),
            (Some(_), Some(_), Some(_)) => Err(StsError::InvalidRequest("a delegated mint takes no subject_token".into())),
            // The original refused every direct subject-token exchange (403), and its published
            // clients cache what a mint returns: a single-use gateway mandate goes only to a caller
            // that asks for one by name.
            (Some(_), None, None) if !form.wants_gateway_mandate => Err(StsError::AccessDenied(
                "resource exchanges must use the Gateway; a gateway mandate is minted with requested_token_type=urn:caracal:token-type:gateway-mandate".into(),
            )),
            (Some(subject), None, None) => self.gateway_mint(form, &app, subject, req.request_id).await,
            (None, None, None) => self.session_mint(form, &app, None, req.request_id).await,
        }
    }
}
