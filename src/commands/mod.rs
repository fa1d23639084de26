//! One module per subcommand. They take parsed arguments, make decisions,
//! call the lower layers and print results.

mod accel;
mod binfmt;
mod completions;
mod doctor;
mod export;
mod fetch;
mod list;
mod reset;
mod rm;
mod run;

use anyhow::Result;

use crate::cli::Command;
use crate::specs::Catalog;
use crate::store::Store;
use crate::ui::Ui;

/// Shared by every command.
pub struct Ctx {
    pub catalog: Catalog,
    pub store: Store,
    pub ui: Ui,
}

/// `$XROOT_SPECS_DIR`, else `$XROOT_HOME/specs` (see `Catalog::with_user_specs`).
fn user_specs_dir() -> Result<std::path::PathBuf> {
    match std::env::var_os("XROOT_SPECS_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Ok(d.into()),
        None => Ok(Store::default_home()?.join("specs")),
    }
}

/// Runs a subcommand and returns the process exit status.
pub fn dispatch(cmd: Command, ui: Ui) -> Result<i32> {
    crate::ui::trace("arguments parsed");
    let ctx = Ctx {
        catalog: Catalog::with_user_specs(&user_specs_dir()?)?,
        store: Store::at(Store::default_home()?),
        ui,
    };
    crate::ui::trace("specs loaded");
    let result = match cmd {
        Command::Fetch(a) => fetch::fetch_all(&ctx, a).map(|_| 0),
        Command::Run(a) => run::run(&ctx, a.arch, a.guest, a.cmd),
        Command::Shell(a) => run::run(&ctx, a.arch, a.guest, vec!["/bin/sh".into(), "-l".into()]),
        Command::List { json } => list::list(&ctx, json).map(|_| 0),
        Command::Rm { targets } => rm::rm(&ctx, &targets).map(|_| 0),
        Command::Binfmt(b) => binfmt::command(&ctx, b),
        Command::Doctor { json, accel } => match accel {
            Some(t) => accel::doctor(&ctx, &t, json),
            None => doctor::doctor(&ctx, json),
        },
        Command::Reset { target } => reset::reset(&ctx, &target).map(|_| 0),
        Command::Export {
            target,
            file,
            format,
        } => export::export(&ctx, &target, &file, format).map(|_| 0),
        Command::Completions { shell } => completions::completions(shell).map(|_| 0),
        Command::Man { dir } => completions::man(&ctx, &dir).map(|_| 0),
    };
    // The process exits right after: freeing the catalog would only cost
    // time (after `run`, copy-on-write faults on pages PID 1 still shares).
    std::mem::forget(ctx);
    result
}
