//! What both command lines offer the same way: shell completions and a man page generated from
//! the clap definition (so they never drift from `--help`), the long version string, and a check
//! that every argument has help text (each binary's unit tests run it over its whole tree).

use clap::Command;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The shells `completions` knows.
pub use clap_complete::Shell;

/// The arguments of `completions`.
#[derive(clap::Args, Clone, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// The arguments of `man`.
#[derive(clap::Args, Clone, Debug)]
pub struct ManArgs {
    /// Write the top page and one page per subcommand into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What a binary generates from its own definition, needing no config.
pub enum Generate<'a> {
    Completions(&'a CompletionsArgs),
    Man(&'a ManArgs),
}

/// Runs `what` for `cmd`; the exit code for `main` (1 when the man pages cannot be written).
pub fn generate(cmd: Command, what: Generate<'_>) -> ExitCode {
    let name = cmd.get_name().to_string();
    match what {
        Generate::Completions(a) => {
            print_completions(cmd, a.shell);
            ExitCode::SUCCESS
        }
        Generate::Man(a) => match write_man_pages(cmd, a.dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// The config `load` gives, or the exit code after printing why not: `<bin>: config error:
/// ...` and 2, before the process binds or opens anything.
pub fn config_or_exit(
    bin: &str,
    loaded: Result<crate::config::Loaded, crate::config::ConfigError>,
) -> Result<crate::config::Loaded, ExitCode> {
    loaded.map_err(|e| {
        eprintln!("{bin}: config error: {e}");
        ExitCode::from(2)
    })
}

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

/// For each binary's unit test: clap's own consistency checks, then help text everywhere.
pub fn assert_consistent_with_help_everywhere(cmd: Command) {
    cmd.clone().debug_assert();
    let missing = args_without_help(&cmd);
    assert!(missing.is_empty(), "arguments without help: {missing:#?}");
}

/// Each binary's unit test of its CLI ([`assert_consistent_with_help_everywhere`]):
/// `stockhook_shared::cli_test!(Cli);` at the end of its `main.rs`, `Cli` its clap parser.
#[macro_export]
macro_rules! cli_test {
    ($cli:ident) => {
        #[cfg(test)]
        mod tests {
            #[test]
            fn the_cli_is_consistent_and_every_argument_has_help() {
                use clap::CommandFactory as _;
                $crate::cli::assert_consistent_with_help_everywhere(super::$cli::command());
            }
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_argument_without_help() {
        let cmd = Command::new("x")
            .about("a")
            .arg(clap::Arg::new("flag").long("flag").help("has help"))
            .subcommand(
                Command::new("sub")
                    .about("b")
                    .arg(clap::Arg::new("bare").long("bare")),
            );
        assert_eq!(args_without_help(&cmd), vec!["x sub: bare".to_string()]);
    }
}
