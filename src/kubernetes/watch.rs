//! List + watch of every object of some kinds across the cluster (pods, services,
//! endpoint slices), each trimmed to the fields its user keeps: the cluster-wide view flow
//! logs need (the `kubernetes` filter's cache holds only this node's pods).
//!
//! One thread runs the watches. Each lists page by page, then watches from the list's
//! `resourceVersion` with bookmarks; a stream that ends is resumed from the last version
//! seen, `410 Gone` lists again, and failures back off (1 s doubling to 60 s, jittered),
//! logged when the error changes. A store bumps its generation on every change, so that
//! its user rebuilds only when something changed; it holds at most `max_objects`
//! objects, and counts the ones it had to leave out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;

use super::client::{ApiError, Client, ClientConf};

/// Keeps the fields of an object its user needs (the rest is dropped at once).
pub type Trim = fn(&Value) -> Value;

/// The objects of one kind, by `namespace/name`.
pub struct Store {
    /// `pods`, `services`, `endpointslices`: for log lines.
    pub resource: &'static str,
    /// The collection's path: `/api/v1/pods`, `/apis/discovery.k8s.io/v1/endpointslices`.
    path: &'static str,
    objects: Mutex<HashMap<String, Arc<Value>>>,
    generation: AtomicU64,
    /// Listed at least once.
    synced: AtomicBool,
    max_objects: usize,
    /// Objects not kept because `max_objects` were held.
    pub dropped: AtomicU64,
}

impl Store {
    fn new(resource: &'static str, path: &'static str, max_objects: usize) -> Store {
        Store {
            resource,
            path,
            objects: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            max_objects,
            dropped: AtomicU64::new(0),
        }
    }

    /// Bumped on every change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects now (shared, not copied).
    pub fn snapshot(&self) -> Vec<Arc<Value>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Value>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces everything with a fresh list.
    fn replace(&self, objects: HashMap<String, Arc<Value>>) {
        *self.lock() = objects;
        self.synced.store(true, Ordering::Release);
        self.changed();
    }

    fn upsert(&self, key: String, obj: Value) {
        let mut m = self.lock();
        if !m.contains_key(&key) && m.len() >= self.max_objects {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        m.insert(key, Arc::new(obj));
        drop(m);
        self.changed();
    }

    fn remove(&self, key: &str) {
        if self.lock().remove(key).is_some() {
            self.changed();
        }
    }
}

fn key(obj: &Value) -> Option<String> {
    let m = &obj["metadata"];
    Some(format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str()?
    ))
}

/// A kind to watch: its name (for log lines), its collection's path, what to keep.
pub struct Kind {
    pub name: &'static str,
    pub path: &'static str,
    pub trim: Trim,
}

/// Starts watching `kinds` with one client configuration; the thread ends when every
/// store is dropped. `who` prefixes log lines.
pub fn spawn(conf: ClientConf, kinds: &[Kind], max_objects: usize, who: String) -> Vec<Arc<Store>> {
    let stores: Vec<Arc<Store>> = kinds
        .iter()
        .map(|k| Arc::new(Store::new(k.name, k.path, max_objects)))
        .collect();
    let tasks: Vec<(Weak<Store>, Trim)> = stores
        .iter()
        .zip(kinds)
        .map(|(s, k)| (Arc::downgrade(s), k.trim))
        .collect();
    let spawned = std::thread::Builder::new()
        .name("kube-watch".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    crate::error!("{who} cannot start the Kubernetes watches: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let handles: Vec<_> = tasks
                    .into_iter()
                    .map(|(store, trim)| {
                        tokio::spawn(watch(store, trim, conf.clone(), who.clone()))
                    })
                    .collect();
                for h in handles {
                    let _ = h.await;
                }
            });
        });
    if let Err(e) = spawned {
        crate::error!("cannot start the Kubernetes watch thread: {e}");
    }
    stores
}

/// Failures in a row, and the last error logged.
#[derive(Default)]
struct Health {
    failures: u32,
    last: Option<String>,
}

impl Health {
    async fn failed(&mut self, who: &str, what: &str, e: &ApiError, conf: &ClientConf) {
        self.failures += 1;
        let delay = Duration::from_secs(1u64 << self.failures.saturating_sub(1).min(6))
            .min(Duration::from_secs(60))
            .mul_f64(0.8 + fastrand::f64() * 0.4);
        let text = e.to_string();
        if self.last.as_deref() != Some(text.as_str()) {
            crate::error!(
                "{who} {what}: {text} ({}); workloads keep their last known names, retry in {:.1}s: {}",
                conf.url(),
                delay.as_secs_f64(),
                e.hint()
            );
            self.last = Some(text);
        }
        tokio::time::sleep(delay).await;
    }

    fn ok(&mut self, who: &str, resource: &str) {
        if self.failures > 0 {
            crate::info!(
                "{who} watching {resource} again after {} failed requests",
                self.failures
            );
        }
        *self = Health::default();
    }
}

/// One page of a list: its objects, the list's version, the continue token.
fn page(body: &[u8], trim: Trim) -> Result<(Vec<Value>, String, Option<String>), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let items = v["items"]
        .as_array()
        .ok_or_else(|| ApiError::BadBody("a list without items".into()))?;
    Ok((
        items.iter().map(trim).collect(),
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        v["metadata"]["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(String::from),
    ))
}

async fn watch(store: Weak<Store>, trim: Trim, conf: ClientConf, who: String) {
    let Some((resource, base)) = store.upgrade().map(|s| (s.resource, s.path)) else {
        return;
    };
    let mut client = Client::new(conf.clone());
    let mut health = Health::default();
    'relist: loop {
        let mut listed = HashMap::new();
        let mut cont: Option<String> = None;
        let rv = loop {
            let mut path = format!("{base}?limit=500");
            if let Some(c) = &cont {
                path.push_str(&format!("&continue={}", super::worker::enc(c)));
            }
            let got = client
                .get_limited(&path, 0)
                .await
                .and_then(|b| page(&b, trim));
            match got {
                Ok((items, rv, next)) => {
                    for obj in items {
                        if let Some(k) = key(&obj) {
                            listed.insert(k, Arc::new(obj));
                        }
                    }
                    match next {
                        Some(c) => cont = Some(c),
                        None => break rv,
                    }
                }
                Err(e) => {
                    health
                        .failed(&who, &format!("cannot list {resource}"), &e, &conf)
                        .await;
                    if store.strong_count() == 0 {
                        return;
                    }
                    continue 'relist;
                }
            }
        };
        let Some(s) = store.upgrade() else { return };
        health.ok(&who, resource);
        let max = s.max_objects;
        if listed.len() > max {
            s.dropped
                .fetch_add((listed.len() - max) as u64, Ordering::Relaxed);
            let keep: Vec<String> = listed.keys().take(max).cloned().collect();
            listed.retain(|k, _| keep.contains(k));
        }
        s.replace(listed);
        drop(s);
        let mut rv = rv;
        loop {
            let path = format!(
                "{base}?watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds=300",
                super::worker::enc(&rv)
            );
            let mut lines = match client.stream(&path).await {
                Ok(l) => l,
                Err(e) => {
                    health
                        .failed(&who, &format!("cannot watch {resource}"), &e, &conf)
                        .await;
                    continue 'relist;
                }
            };
            loop {
                let line = match lines.next().await {
                    Ok(Some(l)) => l,
                    Ok(None) => break,
                    Err(e) => {
                        crate::debug!("{who} watch of {resource} ended: {e}");
                        break;
                    }
                };
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Some(s) = store.upgrade() else { return };
                let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let obj = &ev["object"];
                match ev["type"].as_str().unwrap_or("") {
                    "BOOKMARK" => {
                        if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                            rv = v.to_string();
                        }
                    }
                    "ERROR" => {
                        if obj["code"].as_u64() == Some(410) {
                            crate::debug!(
                                "{who} {resource} version {rv} is gone (410): listing again"
                            );
                        } else {
                            let e = ApiError::Status(
                                obj["code"].as_u64().unwrap_or(0) as u16,
                                obj["message"].as_str().unwrap_or("").to_string(),
                            );
                            health
                                .failed(&who, &format!("watch of {resource}"), &e, &conf)
                                .await;
                        }
                        continue 'relist;
                    }
                    kind @ ("ADDED" | "MODIFIED" | "DELETED") => {
                        if let Some(v) = obj["metadata"]["resourceVersion"].as_str() {
                            rv = v.to_string();
                        }
                        let Some(k) = key(obj) else { continue };
                        if kind == "DELETED" {
                            s.remove(&k);
                        } else {
                            s.upsert(k, trim(obj));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Copies the fields at `paths` (dot-separated) of `v`, nothing else.
pub fn keep(v: &Value, paths: &[&str]) -> Value {
    let mut out = Value::Object(Default::default());
    for p in paths {
        let mut src = v;
        let mut ok = true;
        for part in p.split('.') {
            match src.get(part) {
                Some(x) => src = x,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let mut dst = &mut out;
        let parts: Vec<&str> = p.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            dst = dst
                .as_object_mut()
                .expect("built of objects")
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
        }
        if let Some(o) = dst.as_object_mut() {
            o.insert(parts[parts.len() - 1].to_string(), src.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_copies_only_the_paths() {
        let pod = serde_json::json!({"metadata": {"name": "a", "namespace": "n", "uid": "x", "labels": {"app": "w"}},
            "spec": {"nodeName": "n1", "containers": [{"image": "big"}]}, "status": {"podIP": "10.0.0.1"}});
        let k = keep(
            &pod,
            &[
                "metadata.name",
                "metadata.namespace",
                "metadata.labels",
                "spec.nodeName",
                "status.podIP",
                "status.podIPs",
            ],
        );
        assert_eq!(
            k,
            serde_json::json!({"metadata": {"name": "a", "namespace": "n", "labels": {"app": "w"}},
                "spec": {"nodeName": "n1"}, "status": {"podIP": "10.0.0.1"}})
        );
        assert_eq!(key(&k).as_deref(), Some("n/a"));
    }

    #[test]
    fn a_store_is_bounded_and_counts_changes() {
        let s = Store::new("pods", "/api/v1/pods", 2);
        for n in ["a", "b", "c"] {
            s.upsert(format!("ns/{n}"), serde_json::json!({}));
        }
        assert_eq!((s.len(), s.dropped.load(Ordering::Relaxed)), (2, 1));
        let g = s.generation();
        s.remove("ns/a");
        s.remove("ns/zzz");
        assert_eq!(
            s.generation(),
            g + 1,
            "a removal of nothing changes nothing"
        );
    }
}
