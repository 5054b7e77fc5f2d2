//! `backtest`: replays a year of simulated sales through the real rules and prints, per rule
//! (fixed threshold 5, cover 14 days), the share of stock-outs warned at least the lead time
//! ahead, the median warning lead and alerts per item per month (issue 15, docs/COVER.md).
//!
//! cargo run --release -p stockhook-worker --bin backtest -- [--items N] [--days N] [--seed N]
//!     [--weekly]

use stockhook_worker::backtest::{run, Options};

fn main() {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => v,
                None => {
                    eprintln!("backtest: {name} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--items" => o.items = num("--items") as usize,
            "--days" => o.days = num("--days") as i64,
            "--seed" => o.seed = num("--seed"),
            "--weekly" => o.weekly = true,
            other => {
                eprintln!(
                    "backtest: unknown argument {other}\n\
                     usage: backtest [--items N] [--days N] [--seed N] [--weekly]"
                );
                std::process::exit(2);
            }
        }
    }
    let started = std::time::Instant::now();
    let report = run(&o);
    print!("{}", report.table());
    println!(
        "\nseed {}, weekly profile {}, {:.1} s",
        o.seed,
        if o.weekly { "on" } else { "off" },
        started.elapsed().as_secs_f64()
    );
}
