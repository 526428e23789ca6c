//! The in-process metrics registry, its Prometheus text rendering and its `/metrics` server.
//!
//! [`MetricsRegistry`] is a [`metrics::Recorder`]: install it once with
//! [`MetricsRegistry::install`] and every pvp crate's `metrics::counter!`, `gauge!` and
//! `histogram!` calls land in it. Histograms are HdrHistograms (3 significant figures), rendered
//! as Prometheus histograms with configurable bucket bounds, so PromQL's `histogram_quantile`
//! works on a scrape and the in-process [`SliSource`](crate::SliSource) gets exact quantiles.
//!
//! ```
//! use pvp_ops::metrics::MetricsRegistry;
//!
//! let registry = MetricsRegistry::new();
//! metrics::with_local_recorder(&registry, || {
//!     metrics::counter!("pvp_demo_requests_total", "region" => "kr").increment(3);
//!     metrics::histogram!("pvp_demo_rtt_seconds").record(0.012);
//! });
//! assert_eq!(registry.counter_total("pvp_demo_requests_total"), Some(3));
//! let text = registry.render();
//! assert!(text.contains("pvp_demo_requests_total{region=\"kr\"} 3"));
//! assert!(text.contains("pvp_demo_rtt_seconds_count 1"));
//! ```

mod registry;
mod server;

pub use registry::{HistogramSnapshot, MetricsRegistry, RegistryConfig, RegistryError, RegistryStats};
pub use server::{MetricsServer, ServerError};
