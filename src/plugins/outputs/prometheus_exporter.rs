//! `prometheus_exporter` output: serves the metrics it receives on
//! `http://host:port/metrics` in the Prometheus text exposition format, for Prometheus
//! to scrape. It keeps the latest sets of each input (a new scrape of an input replaces
//! its previous one, as Fluent Bit keys its store by input instance) and encodes them
//! once per flush, not per scrape. `/` answers `Fluent Bit Prometheus Exporter`.
//! The server has the monitoring server's connection cap and request-head timeout.
//! Fluent Bit: plugins/out_prometheus_exporter/prom.c, prom_http.c

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::StatusCode;

use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::format::{write_prometheus, PromOptions};
use crate::event::metrics::Signals;
use crate::event::{Chunk, Str};
use crate::plugins::{BoxFuture, BuildContext, FlushResult, Output, OutputPlugin};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "host",
        PropKind::Str,
        Some("0.0.0.0"),
        "Address to listen on for scrapes.",
    ),
    PropSpec::new(
        "port",
        PropKind::Int,
        Some("2021"),
        "TCP port to listen on for scrapes.",
    ),
    PropSpec::new(
        "add_timestamp",
        PropKind::Bool,
        Some("false"),
        "Add each sample's collection time (milliseconds) to its line.",
    ),
    ADD_LABEL,
];

/// `add_label NAME VALUE`, repeatable: a label added to every sample.
pub(crate) const ADD_LABEL: PropSpec = PropSpec::new(
    "add_label",
    PropKind::Multi,
    None,
    "A label added to every sample: add_label NAME VALUE (repeatable).",
);

pub static PLUGIN: OutputPlugin = OutputPlugin {
    name: "prometheus_exporter",
    description: "Prometheus Exporter",
    props: PROPS,
    workers: 1,
    net: false,
    build,
};

/// The `add_label` pairs, each checked: a label name then a value.
pub(crate) fn add_labels(props: &Props) -> Result<Vec<(Str, Str)>, ConfigError> {
    props
        .multi_entries("add_label")
        .into_iter()
        .map(|entry| {
            let text = entry.value.trim();
            let (name, value) = text
                .split_once(char::is_whitespace)
                .map(|(n, v)| (n, v.trim()))
                .unwrap_or((text, ""));
            let valid = !name.is_empty()
                && !value.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::invalid(
                    &entry.span,
                    format!("{}: invalid add_label '{text}'", props.plugin()),
                    Some("write it as 'add_label NAME VALUE', NAME of letters, digits and _ (not first)".into()),
                ));
            }
            Ok((Arc::from(name), Arc::from(value)))
        })
        .collect()
}

/// The exposition text kept: per source input (in order of arrival) its latest sets
/// encoded, and all of them joined, which a scrape gets.
#[derive(Default)]
struct Latest {
    by_source: Vec<(Str, Vec<u8>)>,
    all: Bytes,
}

/// What the server answers and the flushes update, shared by the output's workers.
struct Shared {
    latest: Mutex<Latest>,
    /// The accept loop, stopped when the output goes away (a reload, the end).
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(h) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

struct PrometheusExporter {
    name: String,
    host: String,
    port: u16,
    timestamps: bool,
    labels: Arc<[(Str, Str)]>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Output>, ConfigError> {
    let port = props.int("port").unwrap_or(2021);
    let port =
        u16::try_from(port).map_err(|_| props.error("port", "a TCP port from 0 to 65535"))?;
    Ok(Box::new(PrometheusExporter {
        name: ctx.instance.to_string(),
        host: props.str("host").unwrap_or("0.0.0.0").to_string(),
        port,
        timestamps: props.bool("add_timestamp").unwrap_or(false),
        labels: add_labels(props)?.into(),
        shared: Arc::new(Shared {
            latest: Mutex::default(),
            server: Mutex::new(None),
        }),
        buf: Vec::new(),
    }))
}

fn answer(shared: &Shared, path: &str) -> hyper::Response<http_body_util::Full<Bytes>> {
    match path {
        "/" => crate::http::respond(StatusCode::OK, None, "Fluent Bit Prometheus Exporter\n"),
        "/metrics" => {
            let body = shared
                .latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .all
                .clone();
            crate::http::respond(StatusCode::OK, Some("text/plain; version=0.0.4"), body)
        }
        _ => crate::http::respond(StatusCode::NOT_FOUND, None, ""),
    }
}

impl Output for PrometheusExporter {
    fn signals(&self) -> Signals {
        Signals::METRICS
    }

    fn start(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // After a reload the previous pipeline's server may take a moment to let
            // the port go: try for two seconds.
            let mut tries = 0;
            let listener = loop {
                match tokio::net::TcpListener::bind((self.host.as_str(), self.port)).await {
                    Ok(l) => break l,
                    Err(e) if tries < 20 && e.kind() == std::io::ErrorKind::AddrInUse => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        return Err(format!(
                            "cannot listen on {}:{}: {e} (set another port)",
                            self.host, self.port
                        ))
                    }
                }
            };
            if let Ok(addr) = listener.local_addr() {
                crate::info!(
                    "[output:prometheus_exporter:{}] listening on {addr}",
                    self.name
                );
            }
            // The server holds a weak reference: the output's end stops it (Drop).
            let weak = Arc::downgrade(&self.shared);
            let task = crate::http::serve(
                listener,
                "output:prometheus_exporter",
                Default::default(),
                move |req, _| match weak.upgrade() {
                    Some(s) => answer(&s, req.uri().path()),
                    None => crate::http::respond(StatusCode::SERVICE_UNAVAILABLE, None, ""),
                },
            );
            *self.shared.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
            Ok(())
        })
    }

    fn flush<'a>(&'a mut self, chunk: &'a Chunk) -> BoxFuture<'a, FlushResult> {
        Box::pin(async move {
            let opts = PromOptions {
                timestamps: self.timestamps,
                extra_labels: &self.labels,
                endpoint: false,
            };
            let mut latest = self.shared.latest.lock().unwrap_or_else(|e| e.into_inner());
            for set in &chunk.metrics {
                self.buf.clear();
                write_prometheus(&mut self.buf, set, opts);
                if self.buf.is_empty() {
                    continue; // a set without samples keeps the previous one
                }
                match latest.by_source.iter_mut().find(|(s, _)| *s == set.source) {
                    Some((_, text)) => std::mem::swap(text, &mut self.buf),
                    None => latest
                        .by_source
                        .push((set.source.clone(), std::mem::take(&mut self.buf))),
                }
            }
            let all: Vec<u8> = latest
                .by_source
                .iter()
                .flat_map(|(_, t)| t.iter().copied())
                .collect();
            latest.all = Bytes::from(all);
            FlushResult::Ok
        })
    }

    fn fork(&self) -> Box<dyn Output> {
        Box::new(PrometheusExporter {
            name: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            timestamps: self.timestamps,
            labels: self.labels.clone(),
            shared: self.shared.clone(),
            buf: Vec::new(),
        })
    }
}
