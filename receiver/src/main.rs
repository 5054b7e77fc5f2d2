//! `stockhook-receiver`: the CLI. `serve` (the default) runs the receiver; `check-config`,
//! `sign` and `compact` are the operator's tools. Exit codes: 0 ok, 1 runtime failure, 2 bad
//! usage or config (before anything is bound or opened).

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use stockhook_receiver::{app, compact, sign};
use stockhook_shared::cli::{self, Generate};
use stockhook_shared::config;

/// Verifies e-commerce webhooks and appends them durably to stockhook's queue.
#[derive(Parser)]
#[command(name = "stockhook-receiver", version = stockhook_shared::process_metrics::LONG_VERSION, about)]
struct Cli {
    /// Config file (else $STOCKHOOK_CONFIG, else ./stockhook.toml, else
    /// /etc/stockhook/stockhook.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the receiver (the default).
    Serve,
    /// Validate the config and print it as it takes effect, secrets masked.
    CheckConfig,
    /// Print the headers (and a curl line) that make a valid signed request for a source.
    Sign {
        /// The source to sign for (its `name` in the config).
        #[arg(long)]
        source: String,
        /// The body to send.
        #[arg(long, value_name = "BODY")]
        file: PathBuf,
        /// The topic header to add (e.g. products/update for Shopify).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Rewrite the queue database into a fresh one to give disk space back (receiver stopped).
    Compact,
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cli::CompletionsArgs),
    /// Print the man page (roff), or write one per subcommand into --dir.
    Man(cli::ManArgs),
}

fn main() -> ExitCode {
    stockhook_shared::memory::limit_arenas();
    let cli = Cli::parse();
    // Generated from the definition above; no config needed.
    match &cli.command {
        Some(Command::Completions(a)) => {
            return cli::generate(Cli::command(), Generate::Completions(a))
        }
        Some(Command::Man(a)) => return cli::generate(Cli::command(), Generate::Man(a)),
        _ => {}
    }
    // compact touches no source: it resolves no secret.
    let load = match cli.command {
        Some(Command::Compact) => config::load_for_ops,
        _ => config::load,
    };
    let loaded = match cli::config_or_exit("stockhook-receiver", load(cli.config.as_deref())) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let cfg = &loaded.config;
    stockhook_shared::telemetry::init(&cfg.log_level, cfg.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            if let Err(e) = stockhook_receiver::routes::build_sources(cfg) {
                eprintln!("stockhook-receiver: config error: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = app::tls_acceptor(cfg) {
                eprintln!("stockhook-receiver: config error: {e:#}");
                return ExitCode::from(2);
            }
            print!("{loaded}");
            for n in &loaded.notices {
                println!("# note: {n}");
            }
            Ok(())
        }
        Command::Sign {
            source,
            file,
            topic,
        } => match sign::run(cfg, &source, &file, topic.as_deref()) {
            Ok(text) => {
                print!("{text}");
                Ok(())
            }
            Err(sign::SignError::Usage(m)) => {
                eprintln!("stockhook-receiver sign: {m}");
                return ExitCode::from(2);
            }
            Err(sign::SignError::Io(e)) => Err(e),
        },
        Command::Compact => compact::run(cfg),
        Command::Completions(_) | Command::Man(_) => unreachable!("handled above"),
        Command::Serve => {
            for n in &loaded.notices {
                tracing::warn!("{n}");
            }
            if let Err(e) = app::tls_acceptor(cfg) {
                eprintln!("stockhook-receiver: config error: {e:#}");
                return ExitCode::from(2);
            }
            match stockhook_receiver::routes::build_sources(cfg) {
                Err(e) => {
                    eprintln!("stockhook-receiver: config error: {e}");
                    return ExitCode::from(2);
                }
                Ok(_) => tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")
                    .and_then(|rt| {
                        let r = rt.block_on(app::serve(loaded.config.clone(), loaded.path.clone()));
                        // After a storage failure tasks may still wait on sled: do not wait
                        // for them (after a clean stop none is left).
                        rt.shutdown_background();
                        // The request lines still waiting for their writer.
                        stockhook_receiver::access_log::finish();
                        r
                    }),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("stockhook-receiver: {e:#}");
            ExitCode::from(1)
        }
    }
}

stockhook_shared::cli_test!(Cli);
