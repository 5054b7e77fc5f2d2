//! `fake-shopify`: the sync tests' fake Shopify GraphQL Admin API
//! ([`stockhook_tests::fake_shopify`]) as a process, for the catalog sync benchmark of
//! docs/PERFORMANCE.md: a generated shop of `--variants` variants (3 per product) stocked at
//! `--locations` locations, served on loopback until killed. Prints `ready addr=IP:PORT`.

use clap::Parser;
use stockhook_tests::fake_shopify::{FakeShopify, Shop};

#[derive(Parser)]
#[command(about = "A fake Shopify GraphQL Admin API serving a generated shop (benchmarks).")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Variants in the shop.
    #[arg(long, default_value_t = 50_000)]
    variants: usize,
    /// Locations beyond the first.
    #[arg(long, default_value_t = 1)]
    extra_locations: usize,
    /// Units of each variant at each location.
    #[arg(long, default_value_t = 20)]
    stock: i64,
    /// The access token it accepts.
    #[arg(long, default_value = "shpat_bench")]
    token: String,
}

fn main() {
    let a = Args::parse();
    let fake = FakeShopify::bind(
        &a.listen,
        Shop::generated(&a.token, a.variants, a.extra_locations, a.stock),
    );
    println!("ready addr={}", fake.addr);
    loop {
        std::thread::park();
    }
}
