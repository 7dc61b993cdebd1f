//! `audit verify`: the zone's chain checked by the ledger; a broken chain is exit code 3.

use super::Ctx;
use crate::args::AuditCmd;
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, cmd: AuditCmd) -> Result<(), CliError> {
    let AuditCmd::Verify { zone, from_seq, to_seq } = cmd;
    let mut query = Vec::new();
    query.extend(from_seq.map(|s| ("from_seq", s.to_string())));
    query.extend(to_seq.map(|s| ("to_seq", s.to_string())));
    let v = ctx.api.get(&["v1", "zones", &zone.zone, "audit", "verify"], &query).await?;
    ctx.out.object(&v);
    match v["ok"].as_bool() {
        Some(true) => Ok(()),
        _ => Err(CliError::ChainBroken { zone: zone.zone }),
    }
}
