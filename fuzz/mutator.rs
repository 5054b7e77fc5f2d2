//! A small deterministic mutation engine shared by the stable-Rust fuzz harnesses
//! (`receiver/tests/fuzz_schemes.rs`, `worker/tests/fuzz_adapters.rs`, which include this file
//! with `#[path]`). Std only, so it compiles into any test crate.
//!
//! Why not libFuzzer there: CI runs stable Rust, and `cargo fuzz` needs nightly. These harnesses
//! replay real corpora (the shared fixtures) through byte- and token-level mutations chosen by a
//! seeded xorshift generator, so every run is reproducible from `(seed, target, iteration)`.
//! The cargo-fuzz targets in this directory cover the same functions with coverage guidance for
//! whoever has nightly.
//!
//! Contract: every function here is total (never panics for any input or random state), and
//! [`Rng::for_iteration`] makes iteration `i` of a target independent of the iterations before
//! it, so a failure is replayed by running that one iteration again.

#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

/// The test kit's xorshift64*, seeded per target and iteration: good enough to pick mutations.
#[derive(Clone, Debug)]
pub struct Rng(stockhook_test_kit::rng::XorShift);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(stockhook_test_kit::rng::XorShift::from_state(splitmix(
            seed,
        )))
    }

    /// The generator of iteration `i` of `target` under `seed`.
    pub fn for_iteration(seed: u64, target: &str, i: u64) -> Rng {
        Rng::new(seed ^ fnv1a(target.as_bytes()) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den.max(1) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A length skewed toward small values, at most `max`.
    pub fn small_len(&mut self, max: usize) -> usize {
        let cap = match self.below(4) {
            0 => 1,
            1 => 8,
            2 => 64,
            _ => max,
        };
        1 + self.below(cap.min(max).max(1))
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Tokens that tend to reach the corners of JSON, XML, base64, HTTP header and time parsers.
pub const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\\"",
    b"\\u0000",
    b"\\ud800",
    b"\\udfff\\ud800",
    b"\\uD83D\\uDE00",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"-1",
    b"1e999",
    b"-1e999",
    b"1E-400",
    b"0.1",
    b"1.0",
    b"9007199254740993",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"18446744073709551615",
    b"18446744073709551616",
    b"340282366920938463463374607431768211456",
    b"00000000000000000000000000000000000000001",
    b"\"\"",
    b"{}",
    b"[]",
    b"{\"\":{}}",
    b"<",
    b">",
    b"</",
    b"/>",
    b"&",
    b"&amp;",
    b"&lt;",
    b"&#0;",
    b"&#x110000;",
    b"&#xD800;",
    b"&bogus;",
    b"&lol9;",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?xml version=\"1.0\"?>",
    b"<!DOCTYPE x [<!ENTITY a \"aaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>",
    b"<Body>",
    b"</Body>",
    b"<Timestamp>",
    b"</Timestamp>",
    b"<NotificationSignature>",
    b"xmlns:a=\"x\"",
    b"a:",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\x80",
    b"\x00",
    b"\r\n",
    b"\n",
    b"\t",
    b" ",
    b"=",
    b"==",
    b"===",
    b"+",
    b"/",
    b"-",
    b"_",
    b"v1,",
    b"v1a,",
    b"v2,",
    b"sha256=",
    b"SHA256=",
    b"Basic ",
    b"whsec_",
    b"T",
    b"Z",
    b"+23:59",
    b"-24:00",
    b":60",
    b".999999999999",
    b"9999-12-31T23:59:59Z",
    b"0000-01-01T00:00:00Z",
    b"2024-02-30T00:00:00Z",
];

/// Applies one random mutation to `data`; `others` are splice donors (may be empty).
pub fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, others: &[&[u8]]) {
    let len = data.len();
    match rng.below(17) {
        // Bit flip.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // Random byte.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.byte();
        }
        // Insert random bytes.
        2 => {
            let at = rng.below(len + 1);
            let n = rng.small_len(32);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            data.splice(at..at, bytes);
        }
        // Insert a token.
        3 | 4 => {
            let at = rng.below(len + 1);
            let tok = rng.pick(TOKENS).to_vec();
            data.splice(at..at, tok);
        }
        // Overwrite with a token.
        5 if len > 0 => {
            let at = rng.below(len);
            let tok = rng.pick(TOKENS);
            let end = (at + tok.len()).min(len);
            data.splice(at..end, tok.iter().copied());
        }
        // Delete a range.
        6 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at);
            data.drain(at..at + n);
        }
        // Truncate.
        7 if len > 0 => {
            let at = rng.below(len);
            data.truncate(at);
        }
        // Duplicate a range in place.
        8 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at);
            let copy = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, copy);
        }
        // Splice a slice of another input in.
        9 if !others.is_empty() => {
            let donor = *rng.pick(others);
            if !donor.is_empty() {
                let from = rng.below(donor.len());
                let n = rng.small_len(donor.len() - from);
                let at = rng.below(len + 1);
                let cut = if len > at && rng.chance(1, 2) {
                    rng.small_len(len - at)
                } else {
                    0
                };
                data.splice(at..at + cut, donor[from..from + n].iter().copied());
            }
        }
        // Replace a run of digits with an extreme number.
        10 => replace_number(rng, data),
        // Deep nesting at a random point (JSON arrays/objects or XML elements).
        11 => {
            let depth = match rng.below(4) {
                0 => 129,
                1 => 1_000,
                2 => 10_000,
                _ => rng.small_len(300),
            };
            let (open, close): (&[u8], &[u8]) = match rng.below(4) {
                0 => (b"[", b"]"),
                1 => (b"{\"a\":", b"}"),
                2 => (b"<a>", b"</a>"),
                _ => (b"[{\"k\":", b"}]"),
            };
            let at = rng.below(len + 1);
            let mut nest = Vec::with_capacity(depth * (open.len() + close.len()));
            for _ in 0..depth {
                nest.extend_from_slice(open);
            }
            if rng.chance(1, 2) {
                nest.extend_from_slice(b"0");
                for _ in 0..depth {
                    nest.extend_from_slice(close);
                }
            }
            data.splice(at..at, nest);
        }
        // Invalid UTF-8 in the middle of a (probable) string.
        12 => {
            let at = rng.below(len + 1);
            let bad: &[&[u8]] = &[
                b"\xff",
                b"\xc3",
                b"\xed\xa0\x80",
                b"\xf8\x88\x80\x80\x80",
                b"\xe2\x28\xa1",
                b"\x80",
            ];
            let tok = rng.pick(bad).to_vec();
            data.splice(at..at, tok);
        }
        // Repeat one byte many times (long lines, long numbers, long names).
        13 => {
            let at = rng.below(len + 1);
            let b = if len > 0 && rng.chance(1, 2) {
                data[rng.below(len)]
            } else {
                *rng.pick(b"9a \"<[{=")
            };
            let n = match rng.below(3) {
                0 => 300,
                1 => 5_000,
                _ => 70_000,
            };
            data.splice(at..at, std::iter::repeat_n(b, n));
        }
        // Swap two ranges' bytes.
        14 if len > 1 => {
            let a = rng.below(len);
            let b = rng.below(len);
            data.swap(a, b);
        }
        // ASCII case flip (topics, header names, hex).
        15 if len > 0 => {
            let i = rng.below(len);
            if data[i].is_ascii_alphabetic() {
                data[i] ^= 0x20;
            }
        }
        // Whitespace around or inside.
        16 => {
            let at = if rng.chance(1, 2) { 0 } else { len };
            let at = if rng.chance(1, 3) {
                rng.below(len + 1)
            } else {
                at
            };
            let ws = rng
                .pick(&[&b" "[..], b"\t", b"\r\n", b"\n", b"  \t "])
                .to_vec();
            data.splice(at..at, ws);
        }
        // The arm's precondition failed (empty input): insert something instead.
        _ => {
            let tok = rng.pick(TOKENS).to_vec();
            data.extend_from_slice(&tok);
        }
    }
}

/// Iteration `i` of `target`: its generator, and a copy of the `corpus` entry it picks after
/// [`mutate`] (up to `max` mutations, splicing from `donors`).
pub fn mutated_pick<T: AsRef<[u8]>>(
    seed: u64,
    target: &str,
    i: u64,
    corpus: &[T],
    donors: &[&[u8]],
    max: usize,
) -> (Rng, Vec<u8>) {
    let mut rng = Rng::for_iteration(seed, target, i);
    let mut input = rng.pick(corpus).as_ref().to_vec();
    mutate(&mut rng, &mut input, donors, max);
    (rng, input)
}

/// One to `max` mutations.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[&[u8]], max: usize) {
    let n = 1 + rng.below(max.max(1));
    for _ in 0..n {
        mutate_once(rng, data, others);
    }
}

fn replace_number(rng: &mut Rng, data: &mut Vec<u8>) {
    let digits: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    let choices: &[&[u8]] = &[
        b"0",
        b"-1",
        b"-0",
        b"1.5",
        b"1e3",
        b"1e999",
        b"9223372036854775807",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"18446744073709551616",
        b"99999999999999999999999999999999999999999999",
        b"0x10",
        b"NaN",
        b"Infinity",
        b"+1",
        b"01",
    ];
    let replacement = *rng.pick(choices);
    if digits.is_empty() {
        let at = rng.below(data.len() + 1);
        data.splice(at..at, replacement.iter().copied());
        return;
    }
    let start = *rng.pick(&digits);
    let mut s = start;
    while s > 0 && data[s - 1].is_ascii_digit() {
        s -= 1;
    }
    let mut e = start;
    while e < data.len() && data[e].is_ascii_digit() {
        e += 1;
    }
    data.splice(s..e, replacement.iter().copied());
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[usize::from(b >> 4)] as char);
        s.push(H[usize::from(b & 15)] as char);
    }
    s
}

/// Hex of `bytes`, cut to the first 4 KiB (with the total length) so a report stays readable;
/// [`save_input`] keeps the whole input.
pub fn hex_head(bytes: &[u8]) -> String {
    const MAX: usize = 4096;
    if bytes.len() <= MAX {
        hex(bytes)
    } else {
        format!("{}... ({} bytes in all)", hex(&bytes[..MAX]), bytes.len())
    }
}

/// Writes a failing input under `dir` as `<target>-<seed>-<iteration>.bin` and returns the path
/// (or why it could not).
pub fn save_input(dir: &std::path::Path, target: &str, seed: u64, i: u64, bytes: &[u8]) -> String {
    let name = format!("{target}-{seed:016x}-{i}.bin");
    let path = dir.join(name);
    match std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, bytes)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("<not saved: {e}>"),
    }
}

/// Fails the run: saves `input` under `dir`, and panics with the target, what went wrong, the
/// seed and iteration (with the variables that replay them) and the input's first bytes in hex.
pub fn fail(dir: &std::path::Path, target: &str, seed: u64, i: u64, what: &str, input: &[u8]) -> ! {
    let saved = save_input(dir, target, seed, i, input);
    panic!(
        "fuzz target {target}: {what}\n  seed={seed} iteration={i} \
         (replay: SHTEST_FUZZ_SEED={seed} SHTEST_FUZZ_ITERS={})\n  input saved to {saved}\n  input hex: {}",
        i + 1,
        hex_head(input)
    )
}

/// The iteration count: `SHTEST_FUZZ_ITERS` (per target), else `default`.
pub fn iterations(default: u64) -> u64 {
    match std::env::var("SHTEST_FUZZ_ITERS") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("SHTEST_FUZZ_ITERS={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// The seed: `SHTEST_FUZZ_SEED` (decimal or 0x-hex), else a fixed one, so CI runs are
/// reproducible and a long run can explore with `SHTEST_FUZZ_SEED=$RANDOM`.
pub fn seed() -> u64 {
    match std::env::var("SHTEST_FUZZ_SEED") {
        Ok(v) => {
            let t = v.trim();
            let parsed = match t.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => t.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("SHTEST_FUZZ_SEED={v:?} is not a number"))
        }
        Err(_) => 0x005E_ED0F_5700_C400,
    }
}

/// Runs `f`, turning a panic into `Err(message)`.
pub fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into())
    })
}
