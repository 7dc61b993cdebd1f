//! `bootstrap`: the first global admin token, once per deployment.

use serde_json::json;

use super::{Ctx, print_once};
use crate::args::BootstrapArgs;
use crate::error::CliError;

pub(super) async fn run(ctx: &Ctx, args: BootstrapArgs) -> Result<(), CliError> {
    let body = args.name.map(|name| json!({ "name": name }));
    let answer = ctx.api.post(&["v1", "bootstrap"], body.as_ref()).await?;
    print_once(ctx, answer, "token", args.save.save.as_deref())
}
