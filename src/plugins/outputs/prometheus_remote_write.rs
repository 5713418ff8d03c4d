//! `prometheus_remote_write` output: each flush's metric sets as one Prometheus remote
//! write request (protobuf `WriteRequest`, snappy-compressed by default) POSTed to
//! `http://host:port/uri`, on the shared HTTP client (`net.*`, `tls.*`, `proxy`).
//! Histograms and summaries go as their `_bucket`/quantile, `_sum` and `_count`
//! series, as Prometheus scrapes them; every series carries `add_label`s.
//!
//! Headers as Fluent Bit sends them: `Content-Type: application/x-protobuf`,
//! `X-Prometheus-Remote-Write-Version: 0.1.0`, `Content-Encoding`, `Authorization`
//! (`http_user`/`http_passwd`), `User-Agent: Fluent-Bit`, then each `header`. A 2xx
//! delivers the chunk; 400 (which Prometheus answers for samples it can never take:
//! out of order, too old, bad labels) drops it, counted and logged with the reason;
//! anything else and connection failures retry it.
//!
//! One worker by default (Fluent Bit: 2): a series' samples must reach Prometheus in
//! time order, so the worker holds back newer chunks while one waits for a retry, and
//! a destination that is down buffers (the inputs wait) and gets them in order later.
//! Fluent Bit: plugins/out_prometheus_remote_write/remote_write.c,
//! lib/cmetrics/src/cmt_encode_prometheus_remote_write.c

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;
use prost::Message;

use super::pool_metrics;
use super::prometheus_exporter::{add_labels, ADD_LABEL};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::metrics::{MetricSet, MetricType, Signals};
use crate::event::{Chunk, Str};
use crate::http_client::{self, Compression, HttpClient};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "host",
        PropKind::Str,
        Some("127.0.0.1"),
        "Destination host name or IP address.",
    ),
    PropSpec::new("port", PropKind::Int, Some("80"), "Destination TCP port."),
    PropSpec::new(
        "uri",
        PropKind::Str,
        Some("/"),
        "Request path, e.g. /api/v1/write.",
    ),
    PropSpec::new(
        "compression",
        PropKind::Enum(&["snappy", "gzip"]),
        Some("snappy"),
        "Payload compression: snappy (what Prometheus reads) or gzip.",
    ),
    ADD_LABEL,
    http_client::HEADER,
    http_client::HTTP_USER,
    http_client::HTTP_PASSWD,
    http_client::PROXY,
    http_client::RESPONSE_TIMEOUT,
    http_client::READ_IDLE_TIMEOUT,
    http_client::LOG_RESPONSE_PAYLOAD,
];

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "prometheus_remote_write",
    description: "Prometheus remote write",
    props: PROPS,
    workers: 1,
    net: true,
    build,
};

/// prometheus/prompb/remote.proto `WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// prometheus/prompb/types.proto `TimeSeries`: labels sorted by name.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `MetricMetadata`: a family's type and help.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// UNKNOWN 0, COUNTER 1, GAUGE 2, HISTOGRAM 3, SUMMARY 5.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
}

/// Appends the series of `set` (with `extra` labels) to `req`.
pub fn append_write_request(req: &mut WriteRequest, set: &MetricSet, extra: &[(Str, Str)]) {
    for f in &set.families {
        if f.samples.is_empty() {
            continue;
        }
        req.metadata.push(MetricMetadata {
            r#type: match f.kind {
                MetricType::Counter => 1,
                MetricType::Gauge => 2,
                MetricType::Histogram => 3,
                MetricType::Summary => 5,
                MetricType::Untyped => 0,
            },
            metric_family_name: f.name.to_string(),
            help: f.help.to_string(),
        });
        for s in &f.samples {
            let ts = (s.timestamp / 1_000_000) as i64;
            let mut series = |suffix: &str, first: Option<(&str, String)>, value: f64| {
                let mut labels: Vec<Label> = set
                    .static_labels
                    .iter()
                    .chain(extra)
                    .map(|(k, v)| (k, v))
                    .chain(f.label_keys.iter().zip(&s.labels))
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| Label {
                        name: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect();
                labels.push(Label {
                    name: "__name__".into(),
                    value: format!("{}{suffix}", f.name),
                });
                if let Some((k, v)) = first {
                    labels.push(Label {
                        name: k.into(),
                        value: v,
                    });
                }
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                // One label per name: the sample's own wins over add_label and static ones
                // (the sort is stable, so the last written is last among equals).
                labels.dedup_by(|later, earlier| {
                    let same = later.name == earlier.name;
                    if same {
                        std::mem::swap(later, earlier);
                    }
                    same
                });
                req.timeseries.push(TimeSeries {
                    labels,
                    samples: vec![Sample {
                        value,
                        timestamp: ts,
                    }],
                });
            };
            s.for_each_series(f, |suffix, first, v| {
                let first = first.map(|(k, b)| (k, b.map_or_else(|| "+Inf".to_string(), bound)));
                series(suffix, first, v)
            });
        }
    }
}

/// A bucket bound or quantile as the exposition format writes it.
fn bound(v: f64) -> String {
    let mut out = Vec::new();
    crate::event::format::write_g(&mut out, v, 17);
    String::from_utf8(out).unwrap_or_default()
}

#[derive(Clone)]
struct RemoteWrite {
    client: HttpClient,
    uri: String,
    headers: std::sync::Arc<[(HeaderName, HeaderValue)]>,
    compression: Compression,
    labels: std::sync::Arc<[(Str, Str)]>,
    log_response_payload: bool,
    dest: String,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let host = props.str("host").unwrap_or("127.0.0.1").to_string();
    let port = u16::try_from(props.int("port").unwrap_or(80))
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| props.error("port", "a TCP port from 1 to 65535"))?;
    let mut uri = props.str("uri").unwrap_or("/").to_string();
    if !uri.starts_with('/') {
        uri.insert(0, '/');
    }
    let compression = Compression::parse(props.str("compression").unwrap_or("snappy"))
        .ok_or_else(|| props.error("compression", "snappy or gzip"))?;
    let mut headers = vec![
        (
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        ),
        (
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static("0.1.0"),
        ),
        (
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static(compression.encoding()),
        ),
    ];
    headers.extend(http_client::tail_headers(props)?);
    let client = HttpClient::from_props(props, &host, port)?.with_metrics(pool_metrics(ctx));
    Ok(Box::new(RemoteWrite {
        dest: format!("{host}:{port}"),
        client,
        uri,
        headers: headers.into(),
        compression,
        labels: add_labels(props)?.into(),
        log_response_payload: props.bool("log_response_payload").unwrap_or(true),
    }))
}

impl RemoteWrite {
    fn judge(&self, reply: &http_client::Reply) -> FlushResult {
        let line = reply.status_line(&self.dest, self.log_response_payload);
        match reply.status.as_u16() {
            200..=205 => FlushResult::Ok,
            400 => FlushResult::Error(format!(
                "{line}: the server refused the samples (400), they will not be retried"
            )),
            _ => super::retry(reply, line),
        }
    }
}

impl Output for RemoteWrite {
    fn signals(&self) -> Signals {
        Signals::METRICS
    }

    fn ordered(&self) -> bool {
        true
    }

    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            let mut req = WriteRequest::default();
            for set in &chunk.metrics {
                append_write_request(&mut req, set, &self.labels);
            }
            if req.timeseries.is_empty() {
                return FlushResult::Ok;
            }
            let body = match self.compression.compress(&req.encode_to_vec()) {
                Ok(z) => Bytes::from(z),
                Err(e) => return FlushResult::Error(format!("cannot compress the request: {e}")),
            };
            match self
                .client
                .send(Method::POST, &self.uri, &self.headers, body)
                .await
            {
                Ok(reply) => self.judge(&reply),
                Err(e) => FlushResult::Retry(format!("could not flush metrics: {e}")),
            }
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::metrics::{Family, Sample as MSample, SampleValue};
    use std::sync::Arc;

    #[test]
    fn series_have_sorted_labels_and_histograms_expand() {
        let mut c = Family::new("rec_total", "Records.", MetricType::Counter, &["name"]);
        c.push(&["in.0"], 1_700_000_000_123_000_000, 10.0);
        let mut h = Family::new("lat", "Latency.", MetricType::Histogram, &[]);
        h.bounds = vec![0.5, 1.0];
        h.samples.push(MSample {
            labels: vec![],
            timestamp: 1_700_000_000_000_000_000,
            value: SampleValue::Histogram {
                buckets: vec![1, 2, 3],
                sum: 2.5,
                count: 3,
            },
        });
        let set = MetricSet {
            static_labels: vec![],
            families: vec![c, h, Family::new("empty", "", MetricType::Gauge, &[])],
            source: Arc::from("x"),
        };
        let mut req = WriteRequest::default();
        append_write_request(&mut req, &set, &[(Arc::from("env"), Arc::from("dev"))]);
        let text: Vec<String> = req
            .timeseries
            .iter()
            .map(|t| {
                let l: Vec<String> = t
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                format!(
                    "{} {} {}",
                    l.join(","),
                    t.samples[0].value,
                    t.samples[0].timestamp
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                "__name__=rec_total,env=dev,name=in.0 10 1700000000123",
                "__name__=lat_bucket,env=dev,le=0.5 1 1700000000000",
                "__name__=lat_bucket,env=dev,le=1 2 1700000000000",
                "__name__=lat_bucket,env=dev,le=+Inf 3 1700000000000",
                "__name__=lat_sum,env=dev 2.5 1700000000000",
                "__name__=lat_count,env=dev 3 1700000000000",
            ]
        );
        assert_eq!(req.metadata.len(), 2);
        assert_eq!(req.metadata[1].r#type, 3);
        // The bytes decode back (what Prometheus reads).
        let bytes = req.encode_to_vec();
        assert_eq!(WriteRequest::decode(&bytes[..]).unwrap(), req);
    }
}
