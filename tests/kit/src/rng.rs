//! A small seeded RNG for tests (xorshift64*), and the seed rule: from an environment variable
//! when set, so a failing run can be repeated, else fixed or from the clock; always printed.

/// xorshift64*: fast, reproducible, not for anything secret.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Never zero (a zero state stays zero); mix the seed a little.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A generator in exactly this state (made odd: zero is xorshift's fixed point), for callers
    /// that mix their seed their own way.
    pub fn from_state(state: u64) -> XorShift {
        XorShift(state | 1)
    }

    /// Seeded from `var` (see [`seed_from_env`]), the seed printed with `test`'s name.
    pub fn from_env(test: &str, var: &str) -> XorShift {
        XorShift::new(seed_from_env(test, var, None))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The seed in `var` (decimal or `0x` hex), else `default`, else the clock. Printed with `test`
/// and the variable that repeats the run. A value that is not a number panics (a typo must not
/// silently run another seed).
pub fn seed_from_env(test: &str, var: &str, default: Option<u64>) -> u64 {
    let seed = match std::env::var(var) {
        Ok(v) => parse_seed(&v).unwrap_or_else(|| panic!("{var}={v:?} is not a number")),
        Err(_) => default.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        }),
    };
    println!("{test}: seed={seed} (repeat with {var}={seed})");
    seed
}

/// `123` or `0x7b`.
pub fn parse_seed(s: &str) -> Option<u64> {
    let t = s.trim();
    match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_seeds_parse() {
        let (mut a, mut b, mut c) = (XorShift::new(7), XorShift::new(7), XorShift::new(8));
        let xa: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        assert!((10..=20).contains(&a.range(10, 20)));
        assert_eq!(parse_seed(" 0x10 "), Some(16));
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed("x"), None);
    }
}
