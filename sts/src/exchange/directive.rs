//! How the gateway must reach and authenticate to a resource's upstream: the directive the
//! resource exchange returns beside the resource mandate. A provider key is opened here, from its
//! seal under `ZONE_KEK` bound to the zone and resource, and leaves the STS only in the directive.

use caracal_shared::exchange::UpstreamDirective;

use crate::Sts;
use crate::error::StsError;
use crate::store::Resource;

impl Sts {
    /// How the gateway must reach and authenticate to the resource's upstream.
    pub(super) fn directive(&self, zone_id: &str, r: &Resource) -> Result<UpstreamDirective, StsError> {
        let p = &r.credential_placement.0;
        let mut d = UpstreamDirective { url: r.upstream_url.clone(), auth_mode: r.credential_mode.clone(), ..Default::default() };
        d.timeouts = r.timeouts.0;
        // A set of one with the default policy is sent as before (`url` alone), so gateways and
        // directives of plain resources are unchanged.
        let set = caracal_shared::pool::endpoints_or_single(&r.endpoints.0, &r.upstream_url);
        if set.len() > 1 || set[0].url != r.upstream_url || !r.load_balancing.0.is_default() {
            // A gateway that predates pools dials `url` alone: never a draining member.
            d.url = set.iter().find(|e| !e.drain).unwrap_or(&set[0]).url.clone();
            d.endpoints = set;
            d.load_balancing = r.load_balancing.0.clone();
        }
        match r.credential_mode.as_str() {
            "caracal_jwt" => {
                d.auth_header = Some("Authorization".into());
                d.auth_scheme = Some("Bearer".into());
            }
            "provider_apikey" => {
                let (Some(sealed), Some(kek_id)) = (&r.credential_secret, &r.credential_kek_id) else {
                    return Err(StsError::Internal(format!("resource {} has no provider key", r.id)));
                };
                let kek = self.keys.kek();
                if kek_id != kek.id() {
                    return Err(StsError::Internal(format!("provider key of resource {} is sealed under another ZONE_KEK", r.id)));
                }
                let key = kek
                    .open(&crate::store::provider_secret_aad(zone_id, &r.id), sealed)
                    .and_then(|k| String::from_utf8(k).ok())
                    .ok_or_else(|| StsError::Internal(format!("provider key of resource {} does not decrypt", r.id)))?;
                d.auth_location = Some(p.location.clone().unwrap_or_else(|| "header".into()));
                d.auth_header = p.header.clone();
                d.auth_scheme = p.scheme.clone();
                d.query_param_name = p.query_param.clone();
                d.provider_token = Some(key);
                d.forward_caracal_identity = p.forward_caracal_identity;
            }
            _ => {}
        }
        Ok(d)
    }
}
