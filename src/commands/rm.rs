//! `xroot rm`.

use anyhow::Result;

use super::Ctx;
use crate::error::hinted;
use crate::store::RootfsId;

pub fn rm(ctx: &Ctx, targets: &[String]) -> Result<()> {
    for t in targets {
        let (arch, name) = RootfsId::parse(t)?;
        let spec = ctx.catalog.resolve(&arch)?;
        let id = RootfsId {
            arch: spec.name.clone(),
            name,
        };
        if ctx.store.remove(&id)? {
            ctx.ui.info(format!("removed {id}"));
        } else {
            return Err(hinted(
                format!("{id} is not installed"),
                "see `xroot list` for what is installed",
            ));
        }
    }
    Ok(())
}
