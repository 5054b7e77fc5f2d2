//! `stockhook-worker`: `run` drains the queue into alerts; the other subcommands are the
//! operator's CLI. Exit codes: 0 ok, 1 the operation failed, 2 bad usage or config.

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use stockhook_shared::cli::{self, Generate};
use stockhook_shared::config;
use stockhook_worker::ops::{self, Kind, OpsError, Selection};

/// Drains stockhook's queue into inventory alerts sent by email; also the operator's CLI.
#[derive(Parser)]
#[command(name = "stockhook-worker", version = stockhook_shared::process_metrics::LONG_VERSION, about)]
struct Cli {
    /// Config file (else $STOCKHOOK_CONFIG, else ./stockhook.toml, else
    /// /etc/stockhook/stockhook.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drain the queue, evaluate the rules, send the emails (until SIGTERM).
    Run,
    /// Dead-lettered events and failed alerts.
    #[command(subcommand)]
    Failed(Failed),
    /// Queue depth, events processed, alerts sent/pending/failed, per source.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Current inventory state per item, with last sale and alert state, as CSV on stdout.
    Export {
        /// CSV (the default and only format; accepted so scripts that pass it keep working).
        #[arg(long)]
        csv: bool,
        /// Only items with activity since (RFC 3339, a date, or a duration back: 7d).
        #[arg(long)]
        since: Option<String>,
        /// Also items removed from their catalog, with the removal time and reason.
        #[arg(long)]
        all: bool,
    },
    /// Import a catalog file (Shopify product CSV or inventory export, Amazon All Listings
    /// Report, stockhook's own export --csv) into a source: items, titles, SKUs, locations and
    /// levels, through the alert rules. The same file twice changes nothing.
    Import {
        /// The configured source the file belongs to.
        #[arg(long)]
        source: String,
        /// The file (format told from its header row).
        file: PathBuf,
        /// Read the file and show what it would change and alert; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Import the good rows and list the bad ones (default: a bad row imports nothing).
        #[arg(long)]
        skip_bad_rows: bool,
    },
    /// The time-based alerts (no sales, days of cover) that would fire at a given time; sends
    /// and writes nothing.
    Preview {
        /// When (RFC 3339, e.g. 2027-02-01T00:00:00Z, or a date).
        #[arg(long)]
        at: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Pull the catalog, levels and recent orders from the platform APIs now (sources with
    /// [sources.shopify_sync] and the like), through the rules like any webhook.
    Sync {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
        /// Fetch and compute the alerts; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Register the Shopify webhook subscriptions stockhook reads, at the source's public URL
    /// (idempotent; subscriptions at another URL are reported, never deleted).
    Connect {
        /// The Shopify source (with [sources.shopify_sync]).
        #[arg(long)]
        source: String,
        /// The public address of the source: https://HOST/webhooks/NAME.
        #[arg(long)]
        url: Option<String>,
        /// Compare the needed subscriptions with those registered; create nothing.
        #[arg(long)]
        check: bool,
        /// Show what would be created; create nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cli::CompletionsArgs),
    /// Print the man page (roff), or write one per subcommand into --dir.
    Man(cli::ManArgs),
}

#[derive(Subcommand)]
enum Failed {
    /// List dead-lettered events and failed alerts: id, kind, source, error, attempts, when.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One failure in full (the payload only with --payload).
    Show {
        /// The event id (evt_...) or alert id.
        id: String,
        /// Also print the event's body (may contain customer data).
        #[arg(long)]
        payload: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Put failures back to be processed or sent again (never sends an alert twice).
    Replay {
        #[command(flatten)]
        change: Change,
        /// Return at once instead of waiting (up to 30 s) for the worker to read each replayed
        /// event again and reporting whether it was processed or failed again.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete failures for good.
    Purge {
        #[command(flatten)]
        change: Change,
    },
}

/// Which failures `failed replay` or `failed purge` changes, and the care it takes.
#[derive(Args)]
struct Change {
    /// Event ids (evt_...) and/or alert ids.
    ids: Vec<String>,
    /// Every failure the filter selects (with --yes, or --dry-run first).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: Filter,
    /// Show what would change (a replay: also which alerts it would raise); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Confirm a bulk change.
    #[arg(long)]
    yes: bool,
}

#[derive(Args, Clone, Default)]
struct Filter {
    /// Only this source.
    #[arg(long)]
    source: Option<String>,
    /// Only events or only alerts.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// Failed at or after (RFC 3339, a date, or a duration back from now: 24h).
    #[arg(long)]
    since: Option<String>,
    /// Failed before.
    #[arg(long)]
    until: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
}

fn selection(ids: Vec<String>, all: bool, f: Filter) -> Result<Selection, OpsError> {
    let when = |s: Option<String>| {
        s.map(|s| ops::parse_when(&s).map_err(OpsError::Usage))
            .transpose()
    };
    Ok(Selection {
        ids,
        all,
        source: f.source,
        kind: f.kind,
        since_ms: when(f.since)?,
        until_ms: when(f.until)?,
        limit: f.limit,
    })
}

/// `failed replay` (`replay`) or `failed purge`.
async fn failed_change(
    cfg: &config::Config,
    c: Change,
    replay: bool,
    wait: Option<std::time::Duration>,
) -> Result<String, OpsError> {
    let s = selection(c.ids, c.all, c.filter)?;
    ops::failed_change(cfg, &s, replay, c.dry_run, c.yes, wait).await
}

/// mimalloc, not glibc's malloc: the event path (decoding payloads, the state's records, sled's
/// pages, the emails' rendering) allocates and frees many small blocks per event, and glibc
/// spent about a quarter of the worker's CPU in malloc, free and `malloc_consolidate` at 2,000
/// alert-raising events/s (docs/PERFORMANCE.md section 19).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc.h; the Rust binding
/// names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system at once (mimalloc's default waits; each thread's pages
/// then stay resident meanwhile): draining a backlog of 50,000 events peaked at 160-173 MiB RSS
/// with the default, 115-118 MiB with no delay, under issue 12's 128 MiB, at the same rate
/// (docs/PERFORMANCE.md section 19).
fn purge_freed_memory_at_once() {
    // SAFETY: sets one of mimalloc's options; no pointers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    stockhook_shared::memory::no_transparent_huge_pages();
    stockhook_shared::memory::limit_arenas();
    let cli = Cli::parse();
    // Generated from the definition above; no config needed.
    match &cli.command {
        Command::Completions(a) => return cli::generate(Cli::command(), Generate::Completions(a)),
        Command::Man(a) => return cli::generate(Cli::command(), Generate::Man(a)),
        _ => {}
    }
    // `run` sends email (smtp_url_env is resolved); the operator's commands resolve no secret,
    // so they work as the stockhook user outside systemd's credentials.
    // `sync` reads the sources' API tokens.
    let load = match cli.command {
        Command::Run | Command::Sync { .. } | Command::Connect { .. } => config::load_for_worker,
        _ => config::load_for_ops,
    };
    let loaded = match cli::config_or_exit("stockhook-worker", load(cli.config.as_deref())) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let cfg = loaded.config;
    stockhook_shared::telemetry::init(&cfg.log_level, cfg.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stockhook-worker: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: Result<String, OpsError> = rt.block_on(async {
        match cli.command {
            Command::Run => {
                for n in &loaded.notices {
                    tracing::info!("{n}");
                }
                stockhook_worker::pipeline::run(cfg, loaded.path.clone())
                    .await
                    .map(|_| String::new())
                    .map_err(OpsError::Failed)
            }
            other => {
                // `sync` writes state like `run`, so it may be the first to create it.
                if !matches!(other, Command::Sync { .. } | Command::Connect { .. }) {
                    ops::require_data_dir(&cfg)?;
                }
                match other {
                    Command::Run | Command::Completions(_) | Command::Man(_) => {
                        unreachable!("handled above")
                    }
                    Command::Failed(Failed::List { filter, json }) => {
                        ops::failed_list(&cfg, &selection(vec![], true, filter)?, json).await
                    }
                    Command::Failed(Failed::Show { id, payload, json }) => {
                        ops::failed_show(&cfg, &id, payload, json).await
                    }
                    Command::Failed(Failed::Replay { change, no_wait }) => {
                        let wait = (!no_wait).then_some(ops::REPLAY_WAIT);
                        failed_change(&cfg, change, true, wait).await
                    }
                    Command::Failed(Failed::Purge { change }) => {
                        failed_change(&cfg, change, false, None).await
                    }
                    Command::Stats { json } => ops::stats(&cfg, json).await,
                    Command::Import {
                        source,
                        file,
                        dry_run,
                        json,
                        skip_bad_rows,
                    } => {
                        let args = stockhook_worker::catalog::import::ImportArgs {
                            source: &source,
                            file: &file,
                            dry_run,
                            json,
                            skip_bad_rows,
                        };
                        stockhook_worker::catalog::import::run(&cfg, args).await
                    }
                    Command::Preview { at, json } => {
                        let at = ops::parse_when(&at).map_err(OpsError::Usage)?;
                        ops::preview(&cfg, at, json).await
                    }
                    Command::Sync {
                        source,
                        dry_run,
                        json,
                    } => ops::sync(&cfg, source, dry_run, json).await,
                    Command::Connect {
                        source,
                        url,
                        check,
                        dry_run,
                        json,
                    } => ops::connect(&cfg, &source, url.as_deref(), check, dry_run, json).await,
                    Command::Export { csv: _, since, all } => {
                        let since = since
                            .map(|s| ops::parse_when(&s).map_err(OpsError::Usage))
                            .transpose()?;
                        ops::export_csv(&cfg, since, all).await
                    }
                }
            }
        }
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(OpsError::Usage(m)) => {
            eprintln!("stockhook-worker: {m}");
            ExitCode::from(2)
        }
        Err(OpsError::Failed(e)) => {
            eprintln!("stockhook-worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

stockhook_shared::cli_test!(Cli);

#[cfg(test)]
mod purge_delay_tests {
    use super::MI_OPTION_PURGE_DELAY;

    /// Set in the child process of the test below: it prints what mimalloc reads at the index.
    const CHILD: &str = "PURGE_DELAY_TEST_CHILD";

    /// [`MI_OPTION_PURGE_DELAY`] is a number taken from mimalloc.h, not a named binding: a
    /// child process started with `MIMALLOC_PURGE_DELAY=123` must read 123 at that index
    /// (mimalloc reads its options from the environment when the process starts).
    #[test]
    fn the_purge_delay_index_is_the_option_mimalloc_reads_from_its_environment() {
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: reads one of mimalloc's options; no pointers.
            let v = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            println!("purge_delay={v}");
            return;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "purge_delay_tests::the_purge_delay_index_is_the_option_mimalloc_reads_from_its_environment",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", "123")
            .output()
            .expect("running the test binary again");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("purge_delay=123"), "the child said: {said}");
    }
}
