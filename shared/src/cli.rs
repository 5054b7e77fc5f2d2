//! What both command lines offer the same way: shell completions and a man page generated from
//! the clap definition (so they never drift from `--help`), the long version string, and a check
//! that every argument has help text (each binary's unit tests run it over its whole tree).

use clap::Command;
use std::io::Write as _;

/// The shells `completions` knows.
pub use clap_complete::Shell;

/// `completions <shell>`: the completion script for `cmd` on stdout (bash, zsh, fish, elvish,
/// powershell). A package installs it, e.g. to `/usr/share/bash-completion/completions/`.
pub fn print_completions(mut cmd: Command, shell: Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// `man`: the roff man page of `cmd` and of each subcommand (`stockhook-worker-failed-list.1`,
/// ...) written into `dir`, or the top page alone on stdout when `dir` is `None`.
pub fn write_man_pages(cmd: Command, dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::io::stdout().write_all(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Every argument (option, flag, positional) of `cmd` and its subcommands that has no help
/// text, as `command path: --arg`. Empty means every one has help.
pub fn args_without_help(cmd: &Command) -> Vec<String> {
    let mut missing = Vec::new();
    walk(cmd, cmd.get_name().to_string(), &mut missing);
    missing
}

fn walk(cmd: &Command, path: String, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path}: {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        if sub.get_about().is_none() {
            missing.push(format!("{path} {} (the subcommand)", sub.get_name()));
        }
        walk(sub, format!("{path} {}", sub.get_name()), missing);
    }
}
