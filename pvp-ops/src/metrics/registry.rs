use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use hdrhistogram::Histogram;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

use crate::{MetricSource, SourceError};

/// How the registry stores and renders histograms.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// The smallest distinguishable histogram value, in the recorded unit (default 1e-6: a
    /// microsecond when values are seconds). Values are stored as multiples of it.
    pub histogram_resolution: f64,
    /// Upper bounds of the rendered Prometheus buckets, ascending (`+Inf` is added).
    pub buckets: Vec<f64>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            histogram_resolution: 1e-6,
            buckets: vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 120.0,
            ],
        }
    }
}

/// Why a registry could not be built or installed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// `histogram_resolution` is not a positive finite number.
    #[error("histogram resolution must be positive and finite")]
    BadResolution,
    /// The bucket bounds are not finite and strictly ascending.
    #[error("bucket bounds must be finite and strictly ascending")]
    BadBuckets,
    /// Another global `metrics` recorder is already installed.
    #[error("a global metrics recorder is already installed")]
    AlreadyInstalled,
}

/// Counters the registry keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryStats {
    /// Counters registered.
    pub counters: usize,
    /// Gauges registered.
    pub gauges: usize,
    /// Histograms registered.
    pub histograms: usize,
    /// Histogram values refused (negative, NaN or infinite).
    pub rejected_values: u64,
    /// Families left out of a rendering because another metric kind already uses the name (for
    /// a histogram: its name or one of its `_bucket`, `_sum` and `_count` series names).
    pub name_conflicts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    name: String,
    labels: Vec<(String, String)>,
}

impl SeriesKey {
    fn from_key(key: &Key) -> Self {
        let mut labels: Vec<(String, String)> =
            key.labels().map(|l| (sanitize(l.key(), false), l.value().to_string())).collect();
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        Self { name: sanitize(key.name(), true), labels }
    }
}

/// Makes `raw` a valid Prometheus metric (`metric = true`) or label name.
fn sanitize(raw: &str, metric: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, c) in raw.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (i > 0 && c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[derive(Debug, Default)]
struct CounterCell(AtomicU64);

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct GaugeCell(AtomicU64);

impl GaugeCell {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some(f(f64::from_bits(bits)).to_bits())
        });
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct HistState {
    hist: Histogram<u64>,
    sum: f64,
}

#[derive(Debug)]
struct HistCell {
    state: Mutex<HistState>,
    resolution: f64,
    rejected: Arc<AtomicU64>,
}

impl HistogramFn for HistCell {
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }
    fn record_many(&self, value: f64, count: usize) {
        if !value.is_finite() || value < 0.0 {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let units = (value / self.resolution).round();
        let units = if units >= u64::MAX as f64 { u64::MAX } else { units as u64 };
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.hist.record_n(units, count as u64).is_err() {
            st.hist.saturating_record_n(units, count as u64);
        }
        st.sum += value * count as f64;
    }
}

/// A point-in-time copy of a histogram (summed over its label sets), in the recorded unit.
#[derive(Debug, Clone)]
pub struct HistogramSnapshot {
    hist: Histogram<u64>,
    sum: f64,
    resolution: f64,
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }
    /// The sum of the recorded values.
    pub fn sum(&self) -> f64 {
        self.sum
    }
    /// The value at quantile `q` (clamped to 0..=1); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.hist.is_empty() || q.is_nan() {
            return None;
        }
        let units = self.hist.value_at_quantile(q.clamp(0.0, 1.0));
        Some(units as f64 * self.resolution)
    }
    /// How many recorded values are at most `bound` (to the histogram's precision).
    pub fn count_at_most(&self, bound: f64) -> u64 {
        if bound < 0.0 || bound.is_nan() {
            return 0;
        }
        let units = bound / self.resolution;
        let units = if units >= u64::MAX as f64 { u64::MAX } else { units as u64 };
        self.hist.count_between(0, units)
    }
    /// The values recorded since `earlier` (a snapshot of the same histogram): `self - earlier`.
    /// If `earlier` is not a prefix of `self` (a reset), `self` is returned unchanged.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut out = self.clone();
        if out.hist.subtract(&earlier.hist).is_ok() {
            out.sum = (self.sum - earlier.sum).max(0.0);
            out
        } else {
            self.clone()
        }
    }
}

#[derive(Debug, Default)]
struct Descriptions {
    help: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Inner {
    config: RegistryConfig,
    // Keyed by the facade's `Key` (hashed once, no allocation on lookup); names are
    // sanitised when rendering.
    counters: RwLock<HashMap<Key, Arc<CounterCell>>>,
    gauges: RwLock<HashMap<Key, Arc<GaugeCell>>>,
    histograms: RwLock<HashMap<Key, Arc<HistCell>>>,
    descriptions: RwLock<Descriptions>,
    rejected: Arc<AtomicU64>,
    conflicts: AtomicU64,
}

/// The in-process metrics registry: a `metrics` facade [`Recorder`] with Prometheus rendering.
///
/// Cloning is cheap and every clone shares the same series.
#[derive(Debug, Clone)]
pub struct MetricsRegistry {
    inner: Arc<Inner>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl MetricsRegistry {
    /// A registry with the default [`RegistryConfig`].
    pub fn new() -> Self {
        Self::build(RegistryConfig::default())
    }

    /// A registry with `config`, checked.
    pub fn with_config(config: RegistryConfig) -> Result<Self, RegistryError> {
        if !(config.histogram_resolution.is_finite() && config.histogram_resolution > 0.0) {
            return Err(RegistryError::BadResolution);
        }
        if config.buckets.iter().any(|b| !b.is_finite()) || config.buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RegistryError::BadBuckets);
        }
        Ok(Self::build(config))
    }

    fn build(config: RegistryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                counters: RwLock::default(),
                gauges: RwLock::default(),
                histograms: RwLock::default(),
                descriptions: RwLock::default(),
                rejected: Arc::default(),
                conflicts: AtomicU64::new(0),
            }),
        }
    }

    /// Installs a clone of this registry as the process-wide `metrics` recorder.
    pub fn install(&self) -> Result<(), RegistryError> {
        metrics::set_global_recorder(self.clone()).map_err(|_| RegistryError::AlreadyInstalled)
    }

    /// The sum of every series of counter `name` (over label sets); `None` if none exists.
    pub fn counter_total(&self, name: &str) -> Option<u64> {
        let map = read(&self.inner.counters);
        let mut found = false;
        let mut total = 0u64;
        for c in map.iter().filter(|(k, _)| named(k, name)).map(|(_, c)| c) {
            found = true;
            total = total.saturating_add(c.0.load(Ordering::Relaxed));
        }
        found.then_some(total)
    }

    /// The sum of every series of gauge `name`; `None` if none exists.
    pub fn gauge_total(&self, name: &str) -> Option<f64> {
        let map = read(&self.inner.gauges);
        let mut found = false;
        let mut total = 0.0;
        for c in map.iter().filter(|(k, _)| named(k, name)).map(|(_, c)| c) {
            found = true;
            total += c.get();
        }
        found.then_some(total)
    }

    /// A snapshot of histogram `name` merged over its label sets; `None` if none exists.
    pub fn histogram(&self, name: &str) -> Option<HistogramSnapshot> {
        let map = read(&self.inner.histograms);
        let mut out: Option<HistogramSnapshot> = None;
        for cell in map.iter().filter(|(k, _)| named(k, name)).map(|(_, c)| c) {
            let st = cell.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut out {
                None => {
                    out = Some(HistogramSnapshot {
                        hist: st.hist.clone(),
                        sum: st.sum,
                        resolution: cell.resolution,
                    })
                }
                Some(s) => {
                    // Both histograms auto-resize, so adding cannot fail for range reasons.
                    let _ = s.hist.add(&st.hist);
                    s.sum += st.sum;
                }
            }
        }
        out
    }

    /// Counters about the registry itself.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            counters: read(&self.inner.counters).len(),
            gauges: read(&self.inner.gauges).len(),
            histograms: read(&self.inner.histograms).len(),
            rejected_values: self.inner.rejected.load(Ordering::Relaxed),
            name_conflicts: self.inner.conflicts.load(Ordering::Relaxed),
        }
    }

    /// Renders every series in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let help = read(&self.inner.descriptions);
        let mut used: std::collections::BTreeSet<String> = Default::default();
        let counters = read(&self.inner.counters);
        let gauges = read(&self.inner.gauges);
        let hists = read(&self.inner.histograms);
        let counters = self.sorted(&counters);
        let gauges = self.sorted(&gauges);
        let hists = self.sorted(&hists);

        let family = |used: &mut std::collections::BTreeSet<String>,
                      name: &str,
                      kind: &str,
                      out: &mut String|
         -> bool {
            if !used.insert(name.to_string()) {
                self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            // promtool's lint wants help text on every family.
            match help.help.get(name) {
                Some(h) => {
                    let _ = writeln!(out, "# HELP {name} {}", escape_help(h));
                }
                None => {
                    let _ = writeln!(out, "# HELP {name} {name} (no description registered)");
                }
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            true
        };

        let mut last = None;
        let mut skip = false;
        for (k, c) in counters.iter() {
            if last != Some(&k.name) {
                skip = !family(&mut used, &k.name, "counter", &mut out);
                last = Some(&k.name);
            }
            if !skip {
                write_series(&mut out, &k.name, &k.labels, None, c.0.load(Ordering::Relaxed) as f64);
            }
        }
        let mut last = None;
        for (k, g) in gauges.iter() {
            if last != Some(&k.name) {
                skip = !family(&mut used, &k.name, "gauge", &mut out);
                last = Some(&k.name);
            }
            if !skip {
                write_series(&mut out, &k.name, &k.labels, None, g.get());
            }
        }
        let mut last = None;
        for (k, h) in hists.iter() {
            if last != Some(&k.name) {
                // A histogram also writes `<name>_bucket`, `_sum` and `_count` series: a counter
                // or gauge of one of those names would make two families share a series.
                let series = ["_bucket", "_sum", "_count"].map(|s| format!("{}{s}", k.name));
                if series.iter().any(|n| used.contains(n)) {
                    self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
                    skip = true;
                } else {
                    skip = !family(&mut used, &k.name, "histogram", &mut out);
                    used.extend(series);
                }
                last = Some(&k.name);
            }
            if skip {
                continue;
            }
            let bounds = &self.inner.config.buckets;
            let mut counts = vec![0u64; bounds.len()];
            let (total, sum) = {
                let st = h.state.lock().unwrap_or_else(PoisonError::into_inner);
                // One pass over the recorded HDR buckets; a bucket counts as its lowest
                // equivalent value, so a value equal to a bound lands in that bound's `le`.
                for v in st.hist.iter_recorded() {
                    let val = st.hist.lowest_equivalent(v.value_iterated_to()) as f64 * h.resolution;
                    let idx = bounds.partition_point(|b| *b < val);
                    if let Some(c) = counts.get_mut(idx) {
                        *c += v.count_at_value();
                    }
                }
                (st.hist.len(), st.sum)
            };
            let bucket = format!("{}_bucket", k.name);
            let mut cumulative = 0u64;
            for (b, c) in bounds.iter().zip(&counts) {
                cumulative += c;
                write_series(&mut out, &bucket, &k.labels, Some(&fmt_f64(*b)), cumulative as f64);
            }
            write_series(&mut out, &bucket, &k.labels, Some("+Inf"), total as f64);
            write_series(&mut out, &format!("{}_sum", k.name), &k.labels, None, sum);
            write_series(&mut out, &format!("{}_count", k.name), &k.labels, None, total as f64);
        }
        out
    }

    /// Series sorted by sanitised name and labels; two keys that sanitise to the same series
    /// keep the first and count a conflict.
    fn sorted<'a, C>(&self, map: &'a HashMap<Key, Arc<C>>) -> Vec<(SeriesKey, &'a Arc<C>)> {
        let mut v: Vec<(SeriesKey, &Arc<C>)> = map.iter().map(|(k, c)| (SeriesKey::from_key(k), c)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let before = v.len();
        v.dedup_by(|a, b| a.0 == b.0);
        self.inner.conflicts.fetch_add((before - v.len()) as u64, Ordering::Relaxed);
        v
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let mut text = description.to_string();
        if let Some(u) = unit {
            let _ = write!(text, " ({})", u.as_str());
        }
        write(&self.inner.descriptions).help.insert(sanitize(key.as_str(), true), text);
    }
}

/// Whether `key` is the metric `name` (as recorded or as rendered).
fn named(key: &Key, name: &str) -> bool {
    key.name() == name || sanitize(key.name(), true) == name
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn write_series(out: &mut String, name: &str, labels: &[(String, String)], le: Option<&str>, v: f64) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, val) in labels.iter().filter(|(k, _)| le.is_none() || k != "le") {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(val));
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            let _ = write!(out, "le=\"{le}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", fmt_f64(v));
}

impl Recorder for MetricsRegistry {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if let Some(c) = read(&self.inner.counters).get(key) {
            return Counter::from_arc(c.clone());
        }
        let c = write(&self.inner.counters).entry(key.clone()).or_default().clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        if let Some(c) = read(&self.inner.gauges).get(key) {
            return Gauge::from_arc(c.clone());
        }
        let c = write(&self.inner.gauges).entry(key.clone()).or_default().clone();
        Gauge::from_arc(c)
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        if let Some(c) = read(&self.inner.histograms).get(key) {
            return metrics::Histogram::from_arc(c.clone());
        }
        let c = write(&self.inner.histograms)
            .entry(key.clone())
            .or_insert_with(|| {
                let mut hist = Histogram::new(3).unwrap_or_else(|_| {
                    // 3 significant figures is always a valid precision.
                    Histogram::new_with_bounds(1, 2, 1).expect("constant bounds are valid")
                });
                hist.auto(true);
                Arc::new(HistCell {
                    state: Mutex::new(HistState { hist, sum: 0.0 }),
                    resolution: self.inner.config.histogram_resolution,
                    rejected: self.inner.rejected.clone(),
                })
            })
            .clone();
        metrics::Histogram::from_arc(c)
    }
}

impl MetricSource for MetricsRegistry {
    /// A gauge's summed value, else a counter's summed total.
    fn metric_value(&mut self, metric: &str) -> Result<f64, SourceError> {
        self.gauge_total(metric)
            .or_else(|| self.counter_total(metric).map(|v| v as f64))
            .ok_or_else(|| SourceError::NoData(metric.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names_and_escapes_labels() {
        let r = MetricsRegistry::new();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("bad-name.total", "re gion" => "a\"b\nc").increment(1);
        });
        let text = r.render();
        assert!(text.contains("bad_name_total{re_gion=\"a\\\"b\\nc\"} 1"), "{text}");
    }

    #[test]
    fn rejects_negative_histogram_values() {
        let r = MetricsRegistry::new();
        metrics::with_local_recorder(&r, || {
            metrics::histogram!("h").record(-1.0);
            metrics::histogram!("h").record(f64::NAN);
            metrics::histogram!("h").record(0.5);
        });
        assert_eq!(r.stats().rejected_values, 2);
        let h = r.histogram("h").unwrap();
        assert_eq!(h.count(), 1);
        let q = h.quantile(0.99).unwrap();
        assert!((q - 0.5).abs() < 0.001, "{q}");
    }

    #[test]
    fn conflicting_kinds_are_rendered_once() {
        let r = MetricsRegistry::new();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("x").increment(1);
            metrics::gauge!("x").set(2.0);
        });
        let text = r.render();
        assert_eq!(text.matches("# TYPE x").count(), 1);
        assert_eq!(r.stats().name_conflicts, 1);
    }
}
