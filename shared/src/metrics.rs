//! Minimal Prometheus text-format metrics: counters with labels and fixed-bucket histograms,
//! lock-free on the hot path. Small enough that pulling in a metrics framework was not worth it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    /// Sum in micro-units, so it fits an atomic integer.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends this histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A counter family keyed by label values (e.g. source and status). An increment is one hash
/// lookup (the label values joined into one key), whatever the number of series; callers keep
/// the number of series bounded by passing only configured names and fixed codes as labels.
#[derive(Default)]
pub struct CounterVec {
    map: RwLock<Series>,
    /// Serializes first insertion of a label set.
    insert: Mutex<()>,
}

/// The map key of a label set: the values joined by a byte no label value contains.
fn key_of(labels: &[&str]) -> String {
    labels.join("\u{1f}")
}

/// Calls `f` with [`key_of`]`(labels)` built in a buffer this thread reuses: counting into a
/// series that exists (every request, after the first of its kind) allocates nothing.
fn with_key<R>(labels: &[&str], f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|k| match k.try_borrow_mut() {
        Ok(mut k) => {
            k.clear();
            for (i, l) in labels.iter().enumerate() {
                if i > 0 {
                    k.push('\u{1f}');
                }
                k.push_str(l);
            }
            f(&k)
        }
        Err(_) => f(&key_of(labels)),
    })
}

impl CounterVec {
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    pub fn add(&self, labels: &[&str], n: u64) {
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, c)) = with_key(labels, |key| map.get(key)) {
                c.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let key = key_of(labels);
        let _g = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                (
                    labels.iter().map(|s| s.to_string()).collect(),
                    AtomicU64::new(0),
                )
            })
            .1
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, labels: &[&str]) -> u64 {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key_of(labels))
            .map_or(0, |(_, c)| c.load(Ordering::Relaxed))
    }

    /// How many label sets exist.
    pub fn series(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        render_family(out, name, help, "counter", label_names, &map, |v| {
            v.to_string()
        });
    }
}

/// A gauge family keyed by label values, holding the last value set (e.g. the time of the last
/// event per source).
#[derive(Default)]
pub struct GaugeVec {
    map: RwLock<Series>,
}

impl GaugeVec {
    /// Sets the gauge of `labels` to `v`.
    pub fn set(&self, labels: &[&str], v: f64) {
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, g)) = with_key(labels, |key| map.get(key)) {
                g.store(v.to_bits(), Ordering::Relaxed);
                return;
            }
        }
        let key = key_of(labels);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                (
                    labels.iter().map(|s| s.to_string()).collect(),
                    AtomicU64::new(0),
                )
            })
            .1
            .store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str, label_names: &[&str]) {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        render_family(out, name, help, "gauge", label_names, &map, |v| {
            f64::from_bits(v).to_string()
        });
    }
}

/// A family's series keyed by [`key_of`]: the label values and the value's bits.
type Series = HashMap<String, (Vec<String>, AtomicU64)>;

/// Appends one family (HELP, TYPE, a line per series sorted by label values).
fn render_family(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    label_names: &[&str],
    series: &Series,
    value: impl Fn(u64) -> String,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    let mut rows: Vec<_> = series.values().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in rows {
        let _ = writeln!(
            out,
            "{name}{{{}}} {}",
            labels(label_names, k),
            value(v.load(Ordering::Relaxed))
        );
    }
}

fn labels(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes one gauge line.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// Writes one counter line without labels (a total kept elsewhere, read when rendering).
pub fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"1\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"10\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"), "{s}");
    }

    #[test]
    fn counters_by_label() {
        let c = CounterVec::default();
        c.inc(&["a", "200"]);
        c.inc(&["a", "200"]);
        c.inc(&["b\"", "401"]);
        assert_eq!(c.get(&["a", "200"]), 2);
        let mut s = String::new();
        c.render(&mut s, "req", "help", &["source", "status"]);
        assert!(s.contains("req{source=\"a\",status=\"200\"} 2"), "{s}");
        assert!(s.contains("req{source=\"b\\\"\",status=\"401\"} 1"), "{s}");
        assert_eq!(c.series(), 2);
    }

    #[test]
    fn gauges_keep_the_last_value() {
        let g = GaugeVec::default();
        g.set(&["shop"], 1.5);
        g.set(&["shop"], 1700000000.0);
        let mut s = String::new();
        g.render(&mut s, "last", "help", &["source"]);
        assert!(s.contains("last{source=\"shop\"} 1700000000\n"), "{s}");
    }
}
