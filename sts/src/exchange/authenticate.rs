//! Who is asking: a client by its secret, or the gateway by its exchange signature.
//!
//! * **Client secret** — one generic `invalid_client` for an unknown application, an archived
//!   application and a wrong secret (no oracle). The secret is checked *before* anything is counted
//!   against the client: a bad secret counts towards the lockout, a good one towards the mint rate.
//!   A lockout refuses further bad secrets (429) but never the right one: secrets carry 256 bits of
//!   entropy, so the lockout cannot be protecting them from guessing, and a lockout that refused
//!   the right secret would let anyone who knows `(zone_id, client_id)` — both are in every mandate
//!   an upstream sees — lock the application out of the STS. An application presented in a zone
//!   that is not its own, *with its own secret*, is told so (403 `zone_invalid`, as in the
//!   original): only the secret's holder learns it, so this is no oracle either.
//! * **Gateway signature** — HMAC over `ts\nnonce\nMETHOD\npath\nsha256(body)` with
//!   `GATEWAY_STS_HMAC_KEY`, a timestamp within the clock skew, a single-use nonce (Redis `SET NX`;
//!   Redis down refuses), and the signed request id equal to the form's `gateway_request_id`.

use std::sync::Arc;

use caracal_shared::sig;

use super::{GatewaySignature, TokenRequest};
use crate::Sts;
use crate::error::StsError;
use crate::form::TokenForm;
use crate::store::Application;

impl Sts {
    /// Client authentication by secret; see the module docs for the order of checks.
    pub(super) async fn authenticate(&self, form: &TokenForm) -> Result<Arc<Application>, StsError> {
        let (Some(app_id), Some(secret)) = (form.application_id.as_deref(), form.client_secret.as_deref()) else {
            return Err(StsError::InvalidClient);
        };
        let app = self.catalog.application(&form.zone_id, app_id).await?;
        let presented = sig::sha256(secret.as_bytes());
        match app {
            Some(app) if app.live() && sig::ct_eq(&app.client_secret_sha256, &presented) => {
                self.limits.admit(&form.zone_id, app_id).await?;
                Ok(app)
            }
            None if self.zone_holding(app_id, &presented, Some(&form.zone_id), false).await?.is_some() => Err(StsError::ZoneInvalid),
            _ => Err(self.limits.record_failure(&form.zone_id, app_id).await.err().unwrap_or(StsError::InvalidClient)),
        }
    }

    /// The live zone (other than `except`) where `app_id` is a live application whose secret is
    /// `presented` — with `control_key`, only an unexpired control key (trait `control:invoke`).
    pub(super) async fn zone_holding(
        &self,
        app_id: &str,
        presented: &[u8],
        except: Option<&str>,
        control_key: bool,
    ) -> Result<Option<String>, StsError> {
        let held: Vec<(String, Vec<u8>)> = caracal_shared::zone_context::all_zones(
            sqlx::query_as(
                "SELECT a.zone_id, a.client_secret_sha256 FROM applications a JOIN zones z ON z.id = a.zone_id \
                 WHERE a.id = $1 AND ($2::text IS NULL OR a.zone_id <> $2) AND a.archived_at IS NULL AND z.archived_at IS NULL \
                 AND (NOT $3 OR ('control:invoke' = ANY(a.traits) AND (a.expires_at IS NULL OR a.expires_at > now())))",
            )
            .bind(app_id)
            .bind(except)
            .bind(control_key)
            .fetch_all(&self.db),
        )
        .await?;
        Ok(held.into_iter().find(|(_, s)| sig::ct_eq(s, presented)).map(|(z, _)| z))
    }

    pub(super) async fn verify_gateway_signature(
        &self,
        gw: &GatewaySignature<'_>,
        req: &TokenRequest<'_>,
        form: &TokenForm,
    ) -> Result<(), StsError> {
        let key = self.cfg.gateway_hmac_key.as_deref().ok_or(StsError::InvalidGatewaySignature)?;
        let (Some(ts), Some(nonce), Some(signature)) = (gw.timestamp, gw.nonce, gw.signature) else {
            return Err(StsError::InvalidGatewaySignature);
        };
        let skew = self.cfg.clock_skew.as_secs() as i64;
        let ts_ok = ts.parse::<i64>().is_ok_and(|t| (super::sign::now().timestamp() - t).abs() <= skew);
        let nonce_ok = (32..=128).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit());
        let correlated = gw.request_id_header.is_some() && gw.request_id_header == form.gateway_request_id.as_deref();
        if !ts_ok || !nonce_ok || !correlated || !sig::verify_gateway_signature(key, ts, nonce, req.method, req.path, req.body, signature) {
            return Err(StsError::InvalidGatewaySignature);
        }
        // Single use of the nonce; Redis failure refuses the exchange.
        let mut set = redis::cmd("SET");
        set.arg(format!("caracal:sts:gw-nonce:{nonce}")).arg(1).arg("NX").arg("EX").arg(2 * skew.max(1));
        let fresh = self.redis.durability().write::<Option<String>, _>(&mut self.redis.clone(), &set).await?.is_some();
        if fresh { Ok(()) } else { Err(StsError::InvalidGatewaySignature) }
    }
}
