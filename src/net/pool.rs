//! The connection pool's bookkeeping, sans-IO: which idle connection to reuse, when one
//! is too old, used too often, or one too many. Time is passed in, so every rule is
//! tested with plain `Instant`s; [`super::upstream`] drives it with tokio.
//! Fluent Bit: src/flb_upstream.c (`flb_upstream_conn_get`, `flb_upstream_conn_release`,
//! `flb_upstream_conn_timeouts`).

use std::time::Duration;

use tokio::time::Instant;

/// The pool's rules, from `net.*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `net.keepalive`: off closes every connection when its flush ends.
    pub keepalive: bool,
    /// `net.keepalive_idle_timeout`.
    pub idle_timeout: Duration,
    /// `net.keepalive_max_recycle`: reuses allowed after the first use; `None` = no limit.
    pub max_recycle: Option<u32>,
    /// `net.max_worker_connections`: open connections (busy + idle + connecting).
    pub max_open: Option<usize>,
}

/// What the pool knows about one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnMeta {
    /// `#N` in log lines, counted per pool from 1.
    pub id: u64,
    /// Flushes that used it, the current one included.
    pub uses: u32,
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle for `net.keepalive_idle_timeout`.
    IdleTimeout,
    /// Used `net.keepalive_max_recycle` + 1 times.
    Recycled,
    /// `net.keepalive off`.
    KeepaliveOff,
    /// The peer closed it (or reset it) while it was idle.
    PeerClosed,
}

impl CloseReason {
    /// The parenthesised reason in `drop keepalive connection #N to H:P (...)`.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "keepalive idle timeout",
            CloseReason::Recycled => "keepalive_max_recycle reached",
            CloseReason::KeepaliveOff => "keepalive off",
            CloseReason::PeerClosed => "closed by the peer",
        }
    }
}

struct Idle<C> {
    conn: C,
    meta: ConnMeta,
    since: Instant,
}

/// What [`PoolCore::take`] decided.
#[derive(Debug)]
pub enum Take<C> {
    /// Reuse this idle connection (check it is still alive first).
    Reuse(C, ConnMeta),
    /// Open a new connection; the slot is reserved until `put` or `discard`.
    Connect(ConnMeta),
    /// `max_open` connections exist and none is idle: wait for one to come back.
    Full,
}

/// Idle connections and the count of open ones.
pub struct PoolCore<C> {
    limits: Limits,
    /// Most recently returned last: reuse it first and let the others age out.
    idle: Vec<Idle<C>>,
    open: usize,
    next_id: u64,
}

impl<C> PoolCore<C> {
    pub fn new(limits: Limits) -> Self {
        PoolCore {
            limits,
            idle: Vec::new(),
            open: 0,
            next_id: 1,
        }
    }

    /// A connection for one flush. Idle connections past their timeout are moved to
    /// `closed` first, so a stale one is never handed out.
    pub fn take(&mut self, now: Instant, closed: &mut Vec<(C, ConnMeta, CloseReason)>) -> Take<C> {
        self.expire(now, closed);
        if let Some(mut idle) = self.idle.pop() {
            idle.meta.uses += 1;
            return Take::Reuse(idle.conn, idle.meta);
        }
        if self.limits.max_open.is_some_and(|max| self.open >= max) {
            return Take::Full;
        }
        self.open += 1;
        let id = self.next_id;
        self.next_id += 1;
        Take::Connect(ConnMeta { id, uses: 1 })
    }

    /// A connection whose flush completed: kept idle, or handed back to be closed.
    pub fn put(
        &mut self,
        conn: C,
        meta: ConnMeta,
        now: Instant,
    ) -> Option<(C, ConnMeta, CloseReason)> {
        let reason = if !self.limits.keepalive {
            CloseReason::KeepaliveOff
        } else if self.limits.max_recycle.is_some_and(|max| meta.uses > max) {
            CloseReason::Recycled
        } else {
            self.idle.push(Idle {
                conn,
                meta,
                since: now,
            });
            return None;
        };
        self.open -= 1;
        Some((conn, meta, reason))
    }

    /// A reserved slot or a taken connection that is gone (connect failed, write failed,
    /// found dead): it no longer counts as open.
    pub fn discard(&mut self, _meta: ConnMeta) {
        self.open -= 1;
    }

    /// Moves idle connections past `net.keepalive_idle_timeout` to `closed`.
    pub fn expire(&mut self, now: Instant, closed: &mut Vec<(C, ConnMeta, CloseReason)>) {
        let timeout = self.limits.idle_timeout;
        self.remove_idle(closed, CloseReason::IdleTimeout, |i| {
            now.saturating_duration_since(i.since) >= timeout
        });
    }

    /// Moves idle connections for which `dead` holds to `closed`.
    pub fn remove_dead(
        &mut self,
        closed: &mut Vec<(C, ConnMeta, CloseReason)>,
        mut dead: impl FnMut(&mut C) -> bool,
    ) {
        self.remove_idle(closed, CloseReason::PeerClosed, |i| dead(&mut i.conn));
    }

    fn remove_idle(
        &mut self,
        closed: &mut Vec<(C, ConnMeta, CloseReason)>,
        reason: CloseReason,
        mut pred: impl FnMut(&mut Idle<C>) -> bool,
    ) {
        let mut i = 0;
        while i < self.idle.len() {
            if pred(&mut self.idle[i]) {
                let idle = self.idle.remove(i);
                self.open -= 1;
                closed.push((idle.conn, idle.meta, reason));
            } else {
                i += 1;
            }
        }
    }

    /// When the oldest idle connection times out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle
            .iter()
            .map(|i| i.since + self.limits.idle_timeout)
            .min()
    }

    /// Open connections: busy, idle and being connected.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open
    }

    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            keepalive: true,
            idle_timeout: 10 * SEC,
            max_recycle: None,
            max_open: None,
        }
    }

    fn connect(pool: &mut PoolCore<&'static str>, now: Instant) -> ConnMeta {
        match pool.take(now, &mut Vec::new()) {
            Take::Connect(m) => m,
            other => panic!("expected a new connection, got {other:?}"),
        }
    }

    #[test]
    fn one_connection_serves_sequential_flushes() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(limits());
        let m = connect(&mut pool, t0);
        assert_eq!(m, ConnMeta { id: 1, uses: 1 });
        assert!(pool.put("c1", m, t0).is_none());
        for n in 2..=5 {
            let Take::Reuse(c, m) = pool.take(t0 + n * SEC, &mut Vec::new()) else {
                panic!()
            };
            assert_eq!((c, m), ("c1", ConnMeta { id: 1, uses: n }));
            assert!(pool.put(c, m, t0 + n * SEC).is_none());
        }
        assert_eq!((pool.open(), pool.idle()), (1, 1));
    }

    #[test]
    fn a_second_connection_only_while_the_first_is_busy() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(limits());
        let a = connect(&mut pool, t0);
        let b = connect(&mut pool, t0);
        assert_eq!((a.id, b.id), (1, 2));
        pool.put("a", a, t0);
        pool.put("b", b, t0 + SEC);
        // The most recently returned is reused first.
        assert!(matches!(
            pool.take(t0 + 2 * SEC, &mut Vec::new()),
            Take::Reuse("b", _)
        ));
    }

    #[test]
    fn idle_timeout_closes_at_exactly_the_timeout() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(limits());
        let m = connect(&mut pool, t0);
        pool.put("c1", m, t0);
        assert_eq!(pool.next_expiry(), Some(t0 + 10 * SEC));
        let mut closed = Vec::new();
        pool.expire(t0 + 10 * SEC - Duration::from_millis(1), &mut closed);
        assert!(closed.is_empty());
        pool.expire(t0 + 10 * SEC, &mut closed);
        assert_eq!(closed, [("c1", m, CloseReason::IdleTimeout)]);
        assert_eq!((pool.open(), pool.idle(), pool.next_expiry()), (0, 0, None));
    }

    #[test]
    fn a_stale_connection_is_never_handed_out() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(limits());
        let m = connect(&mut pool, t0);
        pool.put("old", m, t0);
        let mut closed = Vec::new();
        match pool.take(t0 + 11 * SEC, &mut closed) {
            Take::Connect(m2) => assert_eq!(m2.id, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(closed.len(), 1);
        assert_eq!(pool.open(), 1);
    }

    #[test]
    fn max_recycle_allows_that_many_reuses() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(Limits {
            max_recycle: Some(2),
            ..limits()
        });
        let m = connect(&mut pool, t0);
        assert!(pool.put("c", m, t0).is_none());
        for uses in 2..=3 {
            let Take::Reuse(c, m) = pool.take(t0, &mut Vec::new()) else {
                panic!()
            };
            assert_eq!(m.uses, uses);
            let closed = pool.put(c, m, t0);
            if uses < 3 {
                assert!(closed.is_none());
            } else {
                assert_eq!(closed, Some(("c", m, CloseReason::Recycled)));
            }
        }
        assert_eq!(pool.open(), 0);
        assert_eq!(connect(&mut pool, t0).id, 2);
    }

    #[test]
    fn keepalive_off_closes_after_each_flush() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(Limits {
            keepalive: false,
            ..limits()
        });
        let m = connect(&mut pool, t0);
        assert_eq!(
            pool.put("c", m, t0),
            Some(("c", m, CloseReason::KeepaliveOff))
        );
        assert_eq!(connect(&mut pool, t0).id, 2);
    }

    #[test]
    fn max_open_caps_busy_idle_and_connecting() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(Limits {
            max_open: Some(1),
            ..limits()
        });
        let m = connect(&mut pool, t0);
        assert!(matches!(pool.take(t0, &mut Vec::new()), Take::Full));
        pool.discard(m);
        let m = connect(&mut pool, t0);
        pool.put("c", m, t0);
        assert!(matches!(
            pool.take(t0, &mut Vec::new()),
            Take::Reuse("c", _)
        ));
    }

    #[test]
    fn dead_idle_connections_are_removed() {
        let t0 = Instant::now();
        let mut pool = PoolCore::new(limits());
        let a = connect(&mut pool, t0);
        let b = connect(&mut pool, t0);
        pool.put("alive", a, t0);
        pool.put("dead", b, t0);
        let mut closed = Vec::new();
        pool.remove_dead(&mut closed, |c| *c == "dead");
        assert_eq!(closed, [("dead", b, CloseReason::PeerClosed)]);
        assert_eq!((pool.open(), pool.idle()), (1, 1));
    }
}
