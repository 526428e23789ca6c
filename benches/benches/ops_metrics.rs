//! The metrics hot path every pvp component pays: pvp-ops' `MetricsRegistry` (HdrHistogram
//! histograms) against `metrics-exporter-prometheus`' recorder (the crate a user would pick
//! for a `metrics` 0.24 Prometheus backend), under the same calls.
//!
//! `cargo bench -p pvp-benches --bench ops_metrics`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use metrics::Recorder;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use pvp_ops::metrics::MetricsRegistry;
use std::hint::black_box;

static LABELS: [(&str, &str); 1] = [("region", "kr")];

fn peer() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

fn record(c: &mut Criterion) {
    let ours = MetricsRegistry::new();
    let theirs = peer();
    let mut g = c.benchmark_group("ops_metrics/record");
    let recorders: [(&str, &dyn Recorder); 2] =
        [("pvp-ops", &ours), ("metrics-exporter-prometheus", &theirs)];
    for (name, rec) in recorders {
        // The macro path: the key is looked up on every call, as `counter!(..)` in code does.
        g.bench_function(BenchmarkId::new("counter_macro", name), |b| {
            metrics::with_local_recorder(rec, || {
                b.iter(|| metrics::counter!("pvp_bench_requests_total", &LABELS).increment(black_box(1)));
            })
        });
        // A cached handle: what a component holding its handles pays.
        let counter =
            metrics::with_local_recorder(rec, || metrics::counter!("pvp_bench_cached_total", &LABELS));
        g.bench_function(BenchmarkId::new("counter_handle", name), |b| {
            b.iter(|| counter.increment(black_box(1)))
        });
        let hist =
            metrics::with_local_recorder(rec, || metrics::histogram!("pvp_bench_latency_seconds", &LABELS));
        let mut v = 0.0001f64;
        g.bench_function(BenchmarkId::new("histogram_handle", name), |b| {
            b.iter(|| {
                v = if v > 0.05 { 0.0001 } else { v * 1.01 };
                hist.record(black_box(v));
            })
        });
    }
    g.finish();
}

fn render(c: &mut Criterion) {
    let ours = MetricsRegistry::new();
    let theirs = peer();
    let handle = theirs.handle();
    let recorders: [&dyn Recorder; 2] = [&ours, &theirs];
    for rec in recorders {
        metrics::with_local_recorder(rec, || {
            for i in 0..50 {
                let region = format!("r{i}");
                metrics::counter!("pvp_bench_requests_total", "region" => region.clone()).increment(i);
                metrics::gauge!("pvp_bench_players", "region" => region.clone()).set(i as f64);
                for k in 0..100u32 {
                    metrics::histogram!("pvp_bench_latency_seconds", "region" => region.clone())
                        .record(f64::from(k) * 0.0003);
                }
            }
        });
    }
    let mut g = c.benchmark_group("ops_metrics/render_150_series");
    g.bench_function("pvp-ops", |b| b.iter(|| black_box(ours.render())));
    g.bench_function("metrics-exporter-prometheus", |b| b.iter(|| black_box(handle.render())));
    g.finish();
}

criterion_group! {
    name = benches;
    config = pvp_benches::quick_criterion();
    targets = record, render
}
criterion_main!(benches);
