//! `xroot completions SHELL` and `xroot man DIR`: generated from the clap
//! definitions in `cli`, so they can never disagree with the real options.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Ctx;
use crate::cli::Cli;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    // Rendered into memory first: clap_complete panics on a write error,
    // and `xroot completions bash | head` must not.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "xroot", &mut buf);
    crate::ui::out(&buf)
}

/// Writes `xroot.1` and `xroot-SUB.1` (`xroot-binfmt-status.1`, ...) for
/// every subcommand into `dir`, creating it if needed.
pub fn man(ctx: &Ctx, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Building gives every subcommand its display name (`xroot-run`), which
    // names its page and appears in its synopsis.
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, dir, &mut written)?;
    ctx.ui.info(format!(
        "wrote {} man pages to {} (view one with: man -l {})",
        written.len(),
        dir.display(),
        dir.join("xroot.1").display()
    ));
    Ok(())
}

fn page(cmd: &clap::Command, dir: &Path, written: &mut Vec<String>) -> Result<()> {
    // The footer names the program and its version on every page, not
    // the subcommand ("run ") that clap_mangen would put there.
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("xroot {}", env!("CARGO_PKG_VERSION")))
        .manual("xroot manual");
    let file = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)
        .with_context(|| format!("rendering {}", file.display()))?;
    // Via a temporary name: a reader never sees half a page.
    let tmp = dir.join(format!(".{}.tmp", man.get_filename()));
    fs::write(&tmp, &buf).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
    written.push(man.get_filename());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, dir, written)?;
    }
    Ok(())
}
