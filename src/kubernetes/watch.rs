//! Kubernetes' list + watch protocol, once for every user: [`list_watch`] lists a
//! collection page by page, then watches from the list's `resourceVersion` with
//! bookmarks; a stream that ends is resumed from the last version seen, `410 Gone`
//! lists again, and failures wait as the [`Watcher`] says (its owner logs them its
//! own way). The `kubernetes` filter watches this node's pods with it; flow logs watch
//! pods, services and endpoint slices across the cluster into [`Store`]s.
//!
//! A store keeps each object in its compact form ([`super::objects`]), bumps its
//! generation on every change (so that its user rebuilds only when something
//! changed), holds at most `max_objects` objects and counts the ones it left out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::client::{ApiError, Client, ClientConf};
use super::worker::enc;

/// The delay after `failures` failures in a row: 1 s doubling to 60 s, ±20 % jitter
/// (so that a fleet does not retry in step).
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(60))
        .mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// One page of a list: its objects, the list's version, the continue token.
pub struct Page<T> {
    pub items: Vec<T>,
    pub version: String,
    pub next: Option<String>,
}

/// What one line of a watch stream says.
pub enum Event<T> {
    /// ADDED or MODIFIED (`deleted` false), or DELETED; the object's version.
    Changed {
        item: T,
        deleted: bool,
        version: Option<String>,
    },
    Bookmark(String),
    /// An ERROR event (a `Status`): 410 means the version is gone.
    Error(u16, String),
    /// Not an event this watcher reads (or not an object it knows).
    Ignored,
}

/// The owner's side of a watch: how its objects are decoded and where they go. Each
/// method returning `bool` says whether the owner still wants the watch (false ends it).
pub trait Watcher: Send + 'static {
    type Item: Send;
    /// `[filter:kubernetes]`, for debug lines.
    fn who(&self) -> &str;
    fn page(&mut self, body: &[u8]) -> Result<Page<Self::Item>, ApiError>;
    fn event(&mut self, line: &[u8]) -> Event<Self::Item>;
    /// A whole list arrived (after a start or a 410).
    fn listed(&mut self, items: Vec<Self::Item>) -> bool;
    fn changed(&mut self, item: Self::Item, deleted: bool) -> bool;
    /// Before each request.
    fn requesting(&mut self) -> bool;
    /// A request failed: the owner logs it; how long to wait (None: the owner is gone).
    fn failed(&mut self, what: &str, e: &ApiError) -> Option<Duration>;
    /// A list succeeded after failures.
    fn recovered(&mut self);
}

/// What to list and watch: `path` (`/api/v1/pods`), an optional `selector` query
/// (`fieldSelector=...`, encoded), the page size, the largest list page accepted
/// (0: any) and, for log lines, what it is (`pods of node n1`).
pub struct Collection {
    pub path: String,
    pub selector: Option<String>,
    pub page: usize,
    pub body_limit: usize,
    pub what: String,
}

impl Collection {
    fn url(&self, query: &str) -> String {
        match &self.selector {
            Some(s) => format!("{}?{s}&{query}", self.path),
            None => format!("{}?{query}", self.path),
        }
    }
}

/// Lists and watches `c` for as long as `w` wants it.
pub async fn list_watch<W: Watcher>(mut w: W, conf: ClientConf, c: Collection) {
    let mut client = Client::new(conf);
    'relist: loop {
        let mut items = Vec::new();
        let mut cont: Option<String> = None;
        let listed = loop {
            if !w.requesting() {
                return;
            }
            let mut query = format!("limit={}", c.page);
            if let Some(t) = &cont {
                query.push_str("&continue=");
                query.push_str(&enc(t));
            }
            let got = client
                .get_limited(&c.url(&query), c.body_limit)
                .await
                .and_then(|b| w.page(&b));
            match got {
                Ok(p) => {
                    items.extend(p.items);
                    match p.next.filter(|t| !t.is_empty()) {
                        Some(t) => cont = Some(t),
                        None => break p.version,
                    }
                }
                Err(e) => {
                    let Some(delay) = w.failed(&format!("cannot list {}", c.what), &e) else {
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    continue 'relist;
                }
            }
        };
        w.recovered();
        if !w.listed(items) {
            return;
        }
        let mut version = listed;
        loop {
            if !w.requesting() {
                return;
            }
            let query = format!(
                "watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds=300",
                enc(&version)
            );
            let mut lines = match client.stream(&c.url(&query)).await {
                Ok(l) => l,
                Err(e) => {
                    let Some(delay) = w.failed(&format!("cannot watch {}", c.what), &e) else {
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    continue 'relist;
                }
            };
            loop {
                let line = match lines.next().await {
                    Ok(Some(l)) => l,
                    Ok(None) => break,
                    Err(e) => {
                        crate::debug!("{} watch of {} ended: {e}", w.who(), c.what);
                        break;
                    }
                };
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match w.event(&line) {
                    Event::Bookmark(v) => version = v,
                    Event::Changed {
                        item,
                        deleted,
                        version: v,
                    } => {
                        if let Some(v) = v {
                            version = v;
                        }
                        if !w.changed(item, deleted) {
                            return;
                        }
                    }
                    Event::Error(410, _) => {
                        crate::debug!(
                            "{} {} version {version} is gone (410): listing again",
                            w.who(),
                            c.what
                        );
                        continue 'relist;
                    }
                    Event::Error(code, message) => {
                        let e = ApiError::Status(code, message);
                        let Some(delay) = w.failed(&format!("watch of {}", c.what), &e) else {
                            return;
                        };
                        tokio::time::sleep(delay).await;
                        continue 'relist;
                    }
                    Event::Ignored => {}
                }
            }
        }
    }
}

/// The objects of one kind, by `namespace/name`.
pub struct Store<T> {
    /// `pods`, `services`, `endpointslices`: for log lines.
    pub resource: &'static str,
    objects: Mutex<HashMap<String, Arc<T>>>,
    generation: AtomicU64,
    /// Listed at least once.
    synced: AtomicBool,
    max_objects: usize,
    /// Objects not kept because `max_objects` were held.
    dropped: AtomicU64,
}

/// What every store tells its user, whatever it holds.
pub trait StoreStatus {
    fn resource(&self) -> &'static str;
    /// Bumped on every change.
    fn generation(&self) -> u64;
    fn synced(&self) -> bool;
    /// Objects held.
    fn held(&self) -> usize;
    /// Objects left out since the last call.
    fn take_dropped(&self) -> u64;
}

impl<T> StoreStatus for Store<T> {
    fn resource(&self) -> &'static str {
        self.resource
    }
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
    fn held(&self) -> usize {
        self.lock().len()
    }
    fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

impl<T> Store<T> {
    pub fn new(resource: &'static str, max_objects: usize) -> Store<T> {
        Store {
            resource,
            objects: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            max_objects,
            dropped: AtomicU64::new(0),
        }
    }

    /// The objects now (shared, not copied).
    pub fn snapshot(&self) -> Vec<Arc<T>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<T>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces everything with a fresh list (the first `max_objects` of it).
    fn replace(&self, items: Vec<(String, T)>) {
        let left_out = items.len().saturating_sub(self.max_objects);
        if left_out > 0 {
            self.dropped.fetch_add(left_out as u64, Ordering::Relaxed);
        }
        let objects = items
            .into_iter()
            .take(self.max_objects)
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        *self.lock() = objects;
        self.synced.store(true, Ordering::Release);
        self.changed();
    }

    fn upsert(&self, key: String, obj: T) {
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

/// Decodes an object of the API into its key and compact form.
pub type Decode<T> = fn(&Value) -> Option<(String, T)>;

/// A store's side of a watch: objects decoded with `decode`; failures logged when
/// the error changes, prefixed with `who`.
struct StoreWatch<T> {
    store: Weak<Store<T>>,
    decode: Decode<T>,
    who: String,
    url: String,
    failures: u32,
    last: Option<String>,
}

impl<T: Send + Sync + 'static> Watcher for StoreWatch<T> {
    type Item = (String, T);

    fn who(&self) -> &str {
        &self.who
    }

    fn page(&mut self, body: &[u8]) -> Result<Page<(String, T)>, ApiError> {
        /// The envelope of a list; its items are decoded one by one, so that one odd
        /// object is skipped, not the page.
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            metadata: Option<Value>,
            items: Option<Vec<Value>>,
        }
        let list: List =
            serde_json::from_slice(body).map_err(|e| ApiError::BadBody(e.to_string()))?;
        let items = list
            .items
            .ok_or_else(|| ApiError::BadBody("a list without items".into()))?;
        let meta = list.metadata.unwrap_or(Value::Null);
        Ok(Page {
            items: items.iter().filter_map(self.decode).collect(),
            version: meta["resourceVersion"].as_str().unwrap_or("").to_string(),
            next: meta["continue"].as_str().map(String::from),
        })
    }

    fn event(&mut self, line: &[u8]) -> Event<(String, T)> {
        let Ok(ev) = serde_json::from_slice::<Value>(line) else {
            return Event::Ignored;
        };
        let obj = &ev["object"];
        let version = obj["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from);
        match ev["type"].as_str().unwrap_or("") {
            "BOOKMARK" => version.map_or(Event::Ignored, Event::Bookmark),
            "ERROR" => Event::Error(
                obj["code"].as_u64().unwrap_or(0) as u16,
                obj["message"].as_str().unwrap_or("").to_string(),
            ),
            kind @ ("ADDED" | "MODIFIED" | "DELETED") => match (self.decode)(obj) {
                Some(item) => Event::Changed {
                    item,
                    deleted: kind == "DELETED",
                    version,
                },
                None => Event::Ignored,
            },
            _ => Event::Ignored,
        }
    }

    fn listed(&mut self, items: Vec<(String, T)>) -> bool {
        let Some(s) = self.store.upgrade() else {
            return false;
        };
        s.replace(items);
        true
    }

    fn changed(&mut self, (key, obj): (String, T), deleted: bool) -> bool {
        let Some(s) = self.store.upgrade() else {
            return false;
        };
        if deleted {
            s.remove(&key);
        } else {
            s.upsert(key, obj);
        }
        true
    }

    fn requesting(&mut self) -> bool {
        self.store.strong_count() > 0
    }

    fn failed(&mut self, what: &str, e: &ApiError) -> Option<Duration> {
        self.failures += 1;
        let delay = backoff(self.failures);
        let text = e.to_string();
        if self.last.as_deref() != Some(text.as_str()) {
            crate::error!(
                "{} {what}: {text} ({}); workloads keep their last known names, retry in {:.1}s: {}",
                self.who,
                self.url,
                delay.as_secs_f64(),
                e.hint()
            );
            self.last = Some(text);
        }
        self.requesting().then_some(delay)
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            let resource = self.store.upgrade().map_or("objects", |s| s.resource);
            crate::info!(
                "{} watching {resource} again after {} failed requests",
                self.who,
                self.failures
            );
        }
        self.failures = 0;
        self.last = None;
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A thread with a single-threaded runtime that runs watches; they end when it is
/// dropped.
pub struct Runner {
    tx: mpsc::UnboundedSender<Task>,
}

impl Runner {
    pub fn start(name: &str) -> Runner {
        let (tx, mut rx) = mpsc::unbounded_channel::<Task>();
        crate::runtime::spawn(name, "Kubernetes watches", move || async move {
            while let Some(task) = rx.recv().await {
                tokio::spawn(task);
            }
        });
        Runner { tx }
    }

    /// Lists and watches the collection at `path` (cluster-wide) into `store`.
    pub fn watch<T: Send + Sync + 'static>(
        &self,
        conf: &ClientConf,
        path: &str,
        store: &Arc<Store<T>>,
        decode: Decode<T>,
        who: &str,
    ) {
        let w = StoreWatch {
            store: Arc::downgrade(store),
            decode,
            who: who.to_string(),
            url: conf.url(),
            failures: 0,
            last: None,
        };
        let c = Collection {
            path: path.to_string(),
            selector: None,
            page: 500,
            body_limit: 0,
            what: store.resource.to_string(),
        };
        let _ = self.tx.send(Box::pin(list_watch(w, conf.clone(), c)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_bounded_and_counts_changes() {
        let s: Store<u32> = Store::new("pods", 2);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            s.upsert(format!("ns/{n}"), i as u32);
        }
        assert_eq!((s.held(), s.take_dropped()), (2, 1));
        let g = s.generation();
        s.remove("ns/a");
        s.remove("ns/zzz");
        assert_eq!(
            s.generation(),
            g + 1,
            "a removal of nothing changes nothing"
        );
        s.replace(vec![
            ("ns/x".into(), 1),
            ("ns/y".into(), 2),
            ("ns/z".into(), 3),
        ]);
        assert_eq!((s.held(), s.take_dropped(), s.synced()), (2, 1, true));
    }

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        for (n, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)] {
            let d = backoff(n).as_secs_f64();
            assert!(d >= base * 0.8 && d <= base * 1.2, "{n}: {d}");
        }
    }

    #[test]
    fn a_page_skips_odd_objects_and_reads_its_version() {
        let mut w = StoreWatch::<super::super::objects::PodInfo> {
            store: Weak::new(),
            decode: super::super::objects::PodInfo::decode,
            who: String::new(),
            url: String::new(),
            failures: 0,
            last: None,
        };
        let p = w
            .page(br#"{"metadata":{"resourceVersion":"7","continue":"c1"},"items":[{"metadata":{"name":"a","namespace":"n"}},{"metadata":5},{"metadata":{"name":"b"}}]}"#)
            .unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!((p.version.as_str(), p.next.as_deref()), ("7", Some("c1")));
        assert!(w.page(b"{}").is_err());
        match w.event(br#"{"type":"DELETED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"9"}}}"#) {
            Event::Changed { item, deleted: true, version } => {
                assert_eq!((item.0.as_str(), version.as_deref()), ("n/a", Some("9")))
            }
            _ => panic!("a deletion"),
        }
        assert!(matches!(
            w.event(
                br#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}"#
            ),
            Event::Error(410, _)
        ));
    }
}
