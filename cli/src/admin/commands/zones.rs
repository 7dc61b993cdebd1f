//! `zones list|create|get|archive`.

use serde_json::json;

use super::{Ctx, page_query};
use crate::args::ZonesCmd;
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, cmd: ZonesCmd) -> Result<(), CliError> {
    match cmd {
        ZonesCmd::List(page) => {
            let v = ctx.api.get(&["v1", "zones"], &page_query(&page)).await?;
            ctx.out.list(&v, &["id", "name", "slug", "dcr_enabled", "created_at"]);
        }
        ZonesCmd::Create { name, slug } => {
            let mut body = json!({ "name": name });
            if let Some(slug) = slug {
                body["slug"] = json!(slug);
            }
            ctx.out.object(&ctx.api.post(&["v1", "zones"], Some(&body)).await?);
        }
        ZonesCmd::Get { id } => ctx.out.object(&ctx.api.get(&["v1", "zones", &id], &[]).await?),
        ZonesCmd::Archive { id } => {
            ctx.api.delete(&["v1", "zones", &id]).await?;
            ctx.out.note(&format!("zone {id} archived"));
        }
    }
    Ok(())
}
