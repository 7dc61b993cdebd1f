//! `resources list|create|get|delete`; `create` sends a JSON file as the body, as docs/providers.md
//! describes it.

use super::{Ctx, json_file, page_query};
use crate::args::ResourcesCmd;
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, cmd: ResourcesCmd) -> Result<(), CliError> {
    match cmd {
        ResourcesCmd::List { zone, page } => {
            let v = ctx.api.get(&["v1", "zones", &zone.zone, "resources"], &page_query(&page)).await?;
            ctx.out.list(&v, &["id", "identifier", "upstream_url", "protocol", "credential_mode", "created_at"]);
        }
        ResourcesCmd::Create { zone, file } => {
            let body = json_file(&file)?;
            ctx.out.object(&ctx.api.post(&["v1", "zones", &zone.zone, "resources"], Some(&body)).await?);
        }
        ResourcesCmd::Get { zone, id } => {
            ctx.out.object(&ctx.api.get(&["v1", "zones", &zone.zone, "resources", &id], &[]).await?);
        }
        ResourcesCmd::Delete { zone, id } => {
            ctx.api.delete(&["v1", "zones", &zone.zone, "resources", &id]).await?;
            ctx.out.note(&format!("resource {id} archived"));
        }
    }
    Ok(())
}
