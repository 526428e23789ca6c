//! A client for a Prometheus server's HTTP query API (`/api/v1/query`), usable as an
//! [`SliSource`] and a [`MetricSource`].
//!
//! Event SLIs are read as `sum(<bad>)` and `sum(<total>)` (cumulative counters; the
//! [`SloMonitor`](crate::slo::SloMonitor) takes the deltas), quantile SLIs as
//! `histogram_quantile(q, sum by (le) (rate(<histogram>_bucket[<range>])))`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::slo::{Sli, SliReading};
use crate::{MetricSource, SliSource, SourceError};

/// One series of an instant query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// The evaluation timestamp (seconds since the Unix epoch).
    pub timestamp: f64,
    /// The value (`NaN` and infinities as Prometheus gives them).
    pub value: f64,
}

/// Counters the client keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PromClientStats {
    /// Queries sent.
    pub queries: u64,
    /// Queries that failed (any [`SourceError`]).
    pub failures: u64,
}

/// A Prometheus HTTP API client (blocking, `ureq`).
#[derive(Debug)]
pub struct PromClient {
    base: String,
    agent: ureq::Agent,
    timeout: Duration,
    quantile_range: String,
    stats: PromClientStats,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn parse_value(s: &str) -> Result<f64, SourceError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| SourceError::Malformed(format!("value `{s}` is not a number"))),
    }
}

/// Parses an `/api/v1/query` answer body (vector or scalar result) into samples; anything
/// else is a typed [`SourceError`].
pub fn parse_query_answer(body: &str) -> Result<Vec<PromSample>, SourceError> {
    parse_answer(body)
}

fn parse_answer(body: &str) -> Result<Vec<PromSample>, SourceError> {
    let env: Envelope = serde_json::from_str(body).map_err(|e| SourceError::Malformed(e.to_string()))?;
    if env.status != "success" {
        return Err(SourceError::Query {
            kind: env.error_type.unwrap_or_else(|| "unknown".into()),
            message: env.error.unwrap_or_default(),
        });
    }
    let data = env.data.ok_or_else(|| SourceError::Malformed("no `data`".into()))?;
    match data.result_type.as_str() {
        "vector" => {
            let items: Vec<VectorItem> =
                serde_json::from_value(data.result).map_err(|e| SourceError::Malformed(e.to_string()))?;
            items
                .into_iter()
                .map(|i| {
                    Ok(PromSample { labels: i.metric, timestamp: i.value.0, value: parse_value(&i.value.1)? })
                })
                .collect()
        }
        "scalar" => {
            let (ts, v): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| SourceError::Malformed(e.to_string()))?;
            Ok(vec![PromSample { labels: BTreeMap::new(), timestamp: ts, value: parse_value(&v)? }])
        }
        other => Err(SourceError::Malformed(format!("unexpected resultType `{other}`"))),
    }
}

impl PromClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:9090`), with a 5 s timeout
    /// and a 1 m range for quantile SLIs.
    pub fn new(base_url: impl Into<String>) -> Self {
        let timeout = Duration::from_secs(5);
        Self {
            base: base_url.into().trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
            timeout,
            quantile_range: "1m".into(),
            stats: PromClientStats::default(),
        }
    }

    /// Sets the request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.agent = ureq::AgentBuilder::new().timeout(timeout).build();
        self
    }

    /// Sets the rate range used for quantile SLIs (a PromQL duration such as `30s`).
    pub fn with_quantile_range(mut self, range: impl Into<String>) -> Self {
        self.quantile_range = range.into();
        self
    }

    /// Counters about this client.
    pub fn stats(&self) -> PromClientStats {
        self.stats
    }

    /// Runs an instant query.
    pub fn query(&mut self, promql: &str) -> Result<Vec<PromSample>, SourceError> {
        self.stats.queries += 1;
        crate::fail_point!("pvp-ops/prom-query", |_| {
            self.stats.failures += 1;
            Err(SourceError::Unreachable("fail point pvp-ops/prom-query".into()))
        });
        let r = self.query_inner(promql);
        if r.is_err() {
            self.stats.failures += 1;
        }
        r
    }

    fn query_inner(&self, promql: &str) -> Result<Vec<PromSample>, SourceError> {
        let url = format!("{}/api/v1/query", self.base);
        let resp = self.agent.get(&url).query("query", promql).call();
        let body = match resp {
            Ok(r) => r.into_string().map_err(|e| SourceError::Malformed(e.to_string()))?,
            Err(ureq::Error::Status(status, r)) => {
                let body = r.into_string().unwrap_or_default();
                // Prometheus puts its error in a JSON envelope on 4xx/5xx.
                return Err(match parse_answer(&body) {
                    Err(e @ SourceError::Query { .. }) => e,
                    _ => SourceError::Http { status, message: body.chars().take(200).collect() },
                });
            }
            Err(ureq::Error::Transport(t)) => {
                let msg = t.to_string();
                return Err(if msg.contains("timed out") {
                    SourceError::Timeout(self.timeout)
                } else {
                    SourceError::Unreachable(msg)
                });
            }
        };
        parse_answer(&body)
    }

    /// Runs an instant query expected to give at most one series: its value, or `None` for an
    /// empty answer.
    pub fn query_scalar(&mut self, promql: &str) -> Result<Option<f64>, SourceError> {
        let mut v = self.query(promql)?;
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop().map(|s| s.value)),
            n => Err(SourceError::Ambiguous(n)),
        }
    }
}

impl SliSource for PromClient {
    fn read_sli(&mut self, sli: &Sli) -> Result<SliReading, SourceError> {
        match sli {
            Sli::Events { bad, total } => {
                let total_v = self
                    .query_scalar(&format!("sum({total})"))?
                    .ok_or_else(|| SourceError::NoData(total.clone()))?;
                // No bad series yet means no bad events yet.
                let bad_v = self.query_scalar(&format!("sum({bad})"))?.unwrap_or(0.0);
                if !bad_v.is_finite() || !total_v.is_finite() {
                    return Err(SourceError::Malformed("non-finite counter".into()));
                }
                Ok(SliReading::Events { bad: bad_v, total: total_v })
            }
            Sli::QuantileBelow { histogram, quantile, .. } => {
                let q = self.query_scalar(&format!(
                    "histogram_quantile({quantile}, sum by (le) (rate({histogram}_bucket[{}])))",
                    self.quantile_range
                ))?;
                // NaN: no observations in the range.
                Ok(SliReading::Quantile(q.filter(|v| !v.is_nan())))
            }
            #[allow(unreachable_patterns)]
            _ => Err(SourceError::Malformed("unsupported SLI".into())),
        }
    }
}

impl MetricSource for PromClient {
    /// Runs `metric` as a PromQL expression that must give one series.
    fn metric_value(&mut self, metric: &str) -> Result<f64, SourceError> {
        self.query_scalar(metric)?.ok_or_else(|| SourceError::NoData(metric.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vector_and_scalar() {
        let v = parse_answer(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1.5,"2"]}]}}"#).unwrap();
        assert_eq!(v[0].value, 2.0);
        assert_eq!(v[0].labels["job"], "x");
        let s = parse_answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#)
            .unwrap();
        assert!(s[0].value.is_nan());
    }

    #[test]
    fn malformed_answers_are_typed_errors() {
        for body in [
            "not json",
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"x"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":{"a":1}}}"#,
        ] {
            assert!(matches!(parse_answer(body), Err(SourceError::Malformed(_))), "{body}");
        }
        let e = parse_answer(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#);
        assert!(matches!(e, Err(SourceError::Query { kind, .. }) if kind == "bad_data"));
    }
}
