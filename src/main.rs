//! xroot: step into a Linux system of another CPU architecture.
//!
//! Layers, each depending only on the ones below:
//! `cli` (parse) → `commands` (decide) → `specs`, `mirror`, `store`,
//! `fetch`, `extract`, `binfmt`, `qemu`, `sandbox` → the OS.

mod binfmt;
mod cli;
mod commands;
mod elf;
mod error;
mod extract;
mod fetch;
mod host;
mod mirror;
mod qemu;
mod sandbox;
mod specs;
mod store;
mod ui;
mod userns;

use clap::Parser;

fn main() {
    ui::trace("start");
    let cli = cli::Cli::parse();
    let ui = ui::Ui::new(cli.quiet);
    match commands::dispatch(cli.command, ui) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xroot: error: {e:#}");
            if let Some(h) = error::hint_of(&e) {
                eprintln!("hint: {h}");
            }
            std::process::exit(1);
        }
    }
}
