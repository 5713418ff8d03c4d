//! Nothing lost: a destination down for 30 s, a destination that stops reading (memory
//! bounded, inputs paused), and SIGTERM during a long backoff.

mod common;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(60);

fn values(collector: &TcpCollector) -> Vec<String> {
    String::from_utf8_lossy(&collector.bytes())
        .lines()
        .map(|l| {
            l.split("\"rand_value\":")
                .nth(1)
                .unwrap_or("")
                .trim_end_matches('}')
                .to_string()
        })
        .collect()
}

#[test]
fn a_destination_down_for_30_s_loses_nothing() {
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.5\n    scheduler.base 1\n    scheduler.cap 4\n\
         [INPUT]\n    name random\n    samples 400\n    interval_sec 0\n    interval_nsec 50000000\n    mem_buf_limit 3k\n\
         [OUTPUT]\n    name tcp\n    match *\n    host 127.0.0.1\n    port {port}\n    format json_lines\n    retry_limit no_limits\n"
    ));
    a.wait_log("retry in", T);
    std::thread::sleep(Duration::from_secs(30)); // the outage
    let c = TcpCollector::on_port(port);
    c.wait_lines(400, T);
    let o = a.stop(T);
    let v = values(&c);
    let unique: HashSet<&String> = v.iter().collect();
    assert_eq!(
        v.len(),
        400,
        "every record once (nothing was in flight when the peer was down)"
    );
    assert_eq!(unique.len(), 400);
    assert!(
        o.stderr.contains("service has stopped (0 pending tasks)"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_peer_that_stops_reading_pauses_the_input_and_bounds_memory() {
    let c = TcpCollector::with_mode(Mode::Stalled);
    let pad = "x".repeat(1000);
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name dummy\n    rate 20000\n    mem_buf_limit 2M\n    dummy {{\"pad\":\"{pad}\"}}\n\
         [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n    workers 1\n",
        port = c.port()
    ));
    a.wait_log("[input] dummy.0 paused (mem buf overlimit", T);
    // Stalled for a while: memory must stay flat, far below what 20k records/s would take.
    let mut peak = 0;
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        peak = peak.max(rss_kib(a.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB while stalled");
    // Once the peer's socket buffers are full, the input stays paused.
    let (_, text) = http_get(http, "/api/v2/metrics/prometheus").unwrap();
    assert!(
        text.contains("fluentbit_input_ingestion_paused{name=\"dummy.0\"} 1"),
        "{text}"
    );
    let o = a.stop(Duration::from_secs(20));
    assert!(
        o.stderr.contains("records not delivered"),
        "what stays undelivered is reported:\n{}",
        o.stderr
    );
}

#[test]
fn sigterm_during_a_long_backoff_delivers_within_grace() {
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 5\n    scheduler.base 60\n    scheduler.cap 120\n\
         [INPUT]\n    name random\n    samples 20\n    interval_sec 0\n    interval_nsec 10000000\n\
         [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n"
    ));
    a.wait_log("retry in", T);
    let c = TcpCollector::on_port(port);
    let stopped = Instant::now();
    a.signal(libc::SIGTERM);
    let code = a.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "within grace, not after the 60 s backoff"
    );
    assert_eq!(values(&c).len(), 20, "{}", a.stderr());
}

/// Records in the chunk files under `dir` (read with the agent's own reader).
fn stored(dir: &std::path::Path) -> usize {
    let copy = tempfile::tempdir().unwrap();
    // Load copies: loading may quarantine, and must not disturb the agent.
    let mut n = 0;
    for f in walk(dir) {
        let to = copy.path().join("x").join(f.file_name().unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    let s = agent::pipeline::storage::Store::open(copy.path(), false, true).unwrap();
    for f in s.backlog() {
        n += s.load(&f).unwrap().records.len();
    }
    n
}

/// Runs an agent on `conf` until `n` records are in chunk files under `dir`, then
/// kills it with SIGKILL.
fn kill_once_stored(conf: &str, dir: &std::path::Path, n: usize) {
    let mut a = Agent::start(conf);
    let end = Instant::now() + T;
    while stored(dir) < n {
        assert!(
            Instant::now() < end,
            "records never reached disk:\n{}",
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a.signal(libc::SIGKILL);
    a.wait(T);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            if e.file_name() != "quarantine" {
                out.extend(walk(&e.path()));
            }
        } else if e.path().extension().is_some_and(|x| x == "flb") {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn kill_9_with_filesystem_storage_then_restart_delivers_every_accepted_record() {
    let store = Dir::new();
    let port = free_port();
    let conf = |n: u32| {
        format!(
            "[SERVICE]\n    flush 0.2\n    storage.path {}\n    storage.sync full\n    storage.checksum on\n    storage.backlog.mem_limit 100\n\
             [INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 10000000\n    storage.type filesystem\n\
             [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n",
            store.path().display()
        )
    };
    // The destination is down: 50 records accepted into chunk files, then kill -9.
    kill_once_stored(&conf(50), store.path(), 50);
    assert_eq!(stored(store.path()), 50);
    // A damaged file next to them: quarantined with a log line, never a crash.
    let bad = store.path().join("random.0").join("0-bad.flb");
    // A well-formed frame whose payload is not msgpack records.
    std::fs::write(
        &bad,
        b"AGCHUNK1\x00\x01x\x00\x00\x00\x04\x00\x00\x00\x00junk",
    )
    .unwrap();
    // Restart with the destination up and no new records: the backlog arrives, once each.
    let c = TcpCollector::on_port(port);
    let mut b = Agent::start(&conf(0));
    c.wait_lines(50, T);
    b.wait_until(T, "the chunk files deleted once delivered", |_, _| {
        walk(store.path()).is_empty()
    });
    let o = b.stop(T);
    let v = values(&c);
    assert_eq!(v.len(), 50);
    assert_eq!(v.iter().collect::<HashSet<_>>().len(), 50);
    assert!(o.stderr.contains("[storage] replaying"), "{}", o.stderr);
    assert!(
        o.stderr.contains("[storage] replayed 50 records"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("0-bad.flb") && o.stderr.contains("quarantine"),
        "{}",
        o.stderr
    );
    assert!(store.path().join("quarantine/0-bad.flb").exists());
}

#[test]
fn storage_total_limit_size_drops_the_oldest_chunks_and_counts_them() {
    let store = Dir::new();
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    storage.path {}\n    scheduler.base 1\n    scheduler.cap 1\n\
         [INPUT]\n    name random\n    samples 200\n    interval_sec 0\n    interval_nsec 5000000\n    storage.type filesystem\n\
         [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n    storage.total_limit_size 1k\n",
        store.path().display()
    ));
    a.wait_until(T, "all 200 routed", |_, e| {
        e.contains("total_limit_size reached")
    });
    let c = TcpCollector::on_port(port);
    let dropped = |e: &str| -> usize {
        e.lines()
            .filter(|l| l.contains("storage.total_limit_size reached"))
            .filter_map(|l| {
                l.split("chunk (")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    };
    a.wait_until(T, "everything delivered or dropped", |_, e| {
        values(&c).len() + dropped(e) >= 200
    });
    let o = a.stop(T);
    let (got, lost) = (values(&c).len(), dropped(&o.stderr));
    assert_eq!(
        got + lost,
        200,
        "each record either delivered or counted as dropped"
    );
    assert!(lost > 0 && got > 0, "got {got}, dropped {lost}");
}

#[test]
fn storage_max_chunks_up_pauses_the_input_until_chunks_are_delivered() {
    let store = Dir::new();
    let port = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.1\n    storage.path {}\n    storage.max_chunks_up 1\n    scheduler.base 1\n    scheduler.cap 1\n\
         [INPUT]\n    name random\n    samples 1000\n    interval_sec 0\n    interval_nsec 1000000\n    storage.type filesystem\n\
         [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n",
        store.path().display()
    ));
    a.wait_log("retry in", T);
    // One chunk is up and undeliverable: the engine waits, so the input stops being read.
    let before = stored(store.path());
    std::thread::sleep(Duration::from_secs(2));
    let after = stored(store.path());
    assert!(
        after < 1000 && after - before < 300,
        "input kept going: {before} -> {after}"
    );
    let c = TcpCollector::on_port(port);
    c.wait_lines(1000, T);
    let o = a.stop(T);
    assert_eq!(values(&c).len(), 1000, "{}", o.stderr);
}

/// Replayed chunks whose tag no output takes any more (the config changed between
/// runs) stay on disk, said so, and are delivered by a later start whose config takes
/// them (issue 21 item 13: they were deleted, "replayed 1000 records", 0 delivered).
#[test]
fn replayed_chunks_no_output_takes_are_kept_not_deleted() {
    let store = Dir::new();
    let port = free_port();
    let conf = |n: u32, m: &str| {
        format!(
            "[SERVICE]\n    flush 0.2\n    storage.path {}\n    storage.sync full\n\
             [INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 10000000\n    storage.type filesystem\n\
             [OUTPUT]\n    name tcp\n    match {m}\n    port {port}\n    format json_lines\n    retry_limit no_limits\n",
            store.path().display()
        )
    };
    kill_once_stored(&conf(20, "*"), store.path(), 20);
    // A config whose only output takes another tag: nothing replayed, nothing deleted.
    let c = TcpCollector::on_port(port);
    let mut b = Agent::start(&conf(0, "other.*"));
    b.wait_log("match no output; the file is kept", T);
    let o = b.stop(T);
    assert!(
        o.stderr
            .contains("20 records matching no output were kept on disk"),
        "{}",
        o.stderr
    );
    assert_eq!(stored(store.path()), 20);
    assert!(values(&c).is_empty());
    // The original config again: all 20 arrive, and the files go.
    let mut d = Agent::start(&conf(0, "*"));
    c.wait_lines(20, T);
    d.wait_until(T, "the chunk files deleted once delivered", |_, _| {
        walk(store.path()).is_empty()
    });
    d.stop(T);
    assert_eq!(values(&c).iter().collect::<HashSet<_>>().len(), 20);
}

/// Offsets of the frame headers of a chunk file (magic, tag, then u32 length + u32 CRC
/// + payload per frame).
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 10 + u16::from_be_bytes([bytes[8], bytes[9]]) as usize;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        out.push(at);
        at += 8 + u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}

/// A damaged length field in a frame that is not the last of its chunk file (issue 21
/// item 12): the frames after it were read as "the last frame is cut short", dropped,
/// and the file deleted. Now every record of the file is replayed, the file is kept in
/// quarantine, and the replay says so.
#[test]
fn a_damaged_length_in_a_chunk_file_loses_no_record_and_keeps_the_file() {
    for checksum in ["off", "on"] {
        let store = Dir::new();
        let port = free_port();
        let http = free_port();
        let conf = |n: u32| {
            format!(
                "[SERVICE]\n    flush 30\n    storage.path {}\n    storage.sync full\n    storage.checksum {checksum}\n\
                 \x20   http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
                 [INPUT]\n    name random\n    samples {n}\n    interval_sec 0\n    interval_nsec 10000000\n    storage.type filesystem\n\
                 [OUTPUT]\n    name tcp\n    match *\n    port {port}\n    format json_lines\n    retry_limit no_limits\n",
                store.path().display()
            )
        };
        // flush 30: the 40 records stay in one chunk file, a frame each.
        kill_once_stored(&conf(40), store.path(), 40);
        let files = walk(store.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let offsets = frame_offsets(&bytes);
        assert!(offsets.len() >= 3, "{} frames", offsets.len());
        let at = offsets[1];
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&files[0], &bytes).unwrap();

        let c = TcpCollector::on_port(port);
        let mut b = Agent::start(&conf(0));
        c.wait_lines(40, T);
        b.wait_log("[storage] replayed 40 records", T);
        let (_, metrics) = http_get(http, "/api/v2/metrics/prometheus").unwrap();
        let o = b.stop(T);
        assert_eq!(
            values(&c).iter().collect::<HashSet<_>>().len(),
            40,
            "checksum {checksum}: {}",
            o.stderr
        );
        assert!(
            o.stderr
                .contains("frames follow it; 0 bytes could not be read: moved to"),
            "{}",
            o.stderr
        );
        let kept = store
            .path()
            .join("quarantine")
            .join(files[0].file_name().unwrap());
        assert_eq!(std::fs::read(kept).unwrap(), bytes, "kept as it was");
        assert!(
            metrics.contains("agent_storage_quarantined_files_total{name=\"storage\"} 1"),
            "{metrics}"
        );
    }
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// A Forward frame of 10,000 small records `{"n": j}` tagged `small`.
fn small_records_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    rmp::encode::write_array_len(&mut frame, 2).unwrap();
    rmp::encode::write_str(&mut frame, "small").unwrap();
    rmp::encode::write_array_len(&mut frame, 10_000).unwrap();
    for j in 0..10_000u64 {
        rmp::encode::write_array_len(&mut frame, 2).unwrap();
        rmp::encode::write_uint(&mut frame, 1_700_000_000).unwrap();
        rmp::encode::write_map_len(&mut frame, 1).unwrap();
        rmp::encode::write_str(&mut frame, "n").unwrap();
        rmp::encode::write_uint(&mut frame, j).unwrap();
    }
    frame
}

/// A forward receiver (with `input`'s extra lines) whose only output never reads, and the
/// HTTP port of its monitoring server.
fn stalled_forward_receiver(c: &TcpCollector, input: &str) -> (Agent, u16) {
    let http = free_port();
    let mut a = Agent::start(&format!(
        "[SERVICE]\n    flush 0.2\n    grace 1\n    http_server on\n    http_listen 127.0.0.1\n    http_port {http}\n\
         [INPUT]\n    name forward\n    listen 127.0.0.1\n    port 0\n{input}\
         [OUTPUT]\n    name tcp\n    match *\n    port {}\n    format json_lines\n    retry_limit no_limits\n    workers 1\n",
        c.port()
    ));
    a.wait_log("listening on", T);
    (a, http)
}

/// Writes `frames` forward frames from `frame(i)` until done or the agent stops reading
/// for 5 s; returns how many were written whole.
fn push_frames(port: u16, frames: usize, frame: impl Fn(usize) -> Vec<u8>) -> usize {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..frames {
        if s.write_all(&frame(i)).is_err() {
            return i;
        }
    }
    frames
}

/// A stalled output bounds the memory of an input without `mem_buf_limit` (issue 21
/// item 5): the queues between stages counted chunks, not bytes, so a forward client
/// sending 5 MB records grew the agent by gigabytes until an allocation failed. Now
/// the default `mem_buf_limit` (64M) pauses the input and the sender is held back.
#[test]
fn five_mb_records_to_a_stalled_output_keep_memory_bounded() {
    let c = TcpCollector::with_mode(Mode::Stalled);
    let (mut a, http) = stalled_forward_receiver(&c, "");
    let port = bound_port(&a);
    let big = "x".repeat(5_000_000);
    // 120 records of 5 MB: 600 MB if nothing held them back.
    let sent = push_frames(port, 120, |i| {
        let mut f = Vec::new();
        rmp::encode::write_array_len(&mut f, 3).unwrap();
        rmp::encode::write_str(&mut f, "big").unwrap();
        rmp::encode::write_uint(&mut f, 1_700_000_000 + i as u64).unwrap();
        rmp::encode::write_map_len(&mut f, 1).unwrap();
        rmp::encode::write_str(&mut f, "pad").unwrap();
        rmp::encode::write_str(&mut f, &big).unwrap();
        f
    });
    a.wait_log("[input] forward.0 paused (mem buf overlimit", T);
    let peak = peak_rss_mib(a.pid());
    let (_, metrics) = http_get(http, "/api/v2/metrics/prometheus").unwrap();
    eprintln!(
        "5 MB records: {sent} of 120 written before the agent held back; peak RSS {peak} MiB"
    );
    assert!(sent < 120, "the sender was never held back");
    assert!(peak < 300, "peak RSS {peak} MiB");
    assert!(
        metrics.contains("fluentbit_input_ingestion_paused{name=\"forward.0\"} 1"),
        "{metrics}"
    );
    a.stop(T);
}

/// The same with small records: 9.9 M of them offered in frames of 10,000 (the chunk
/// bounds hold these before the byte limit does; either way the sender is held back).
#[test]
fn many_small_records_to_a_stalled_output_keep_memory_bounded() {
    let c = TcpCollector::with_mode(Mode::Stalled);
    let (a, _) = stalled_forward_receiver(&c, "");
    let port = bound_port(&a);
    let frame = small_records_frame();
    let sent = push_frames(port, 990, |_| frame.clone());
    let peak = peak_rss_mib(a.pid());
    eprintln!("small records: {sent} of 990 frames of 10,000 written before the agent held back; peak RSS {peak} MiB");
    assert!(sent < 990, "the sender was never held back");
    assert!(peak < 300, "peak RSS {peak} MiB");
    a.stop(T);
}

/// `flush.adaptive on` without backlog pressure: after three flushes the interval is
/// flush x2, said in Fluent Bit 5.1.1's words (the same line it logs for this config).
#[test]
fn adaptive_flush_lengthens_the_interval_without_backlog() {
    let mut a = Agent::start(
        "[SERVICE]\n    flush 1\n    log_level debug\n    flush.adaptive on\n\
         [INPUT]\n    name dummy\n    rate 1\n\
         [OUTPUT]\n    name null\n    match *\n",
    );
    a.wait_log(
        "[debug] [engine] adaptive flush interval 2.000 sec (pressure=0.00%, level=0)",
        Duration::from_secs(10),
    );
    let o = a.stop(T);
    assert!(!o.stderr.contains("does not support yet"), "{}", o.stderr);
}

/// Many connections each send one frame while the input is over its mem_buf_limit
/// (issue 21): at most a few frames are decoded and waiting for admission at a time,
/// the others wait as bytes, so 300 frames of 10,000 records (about 500 MB decoded)
/// do not all sit in memory.
#[test]
fn many_connections_waiting_for_admission_hold_few_decoded_frames() {
    let c = TcpCollector::with_mode(Mode::Stalled);
    let (a, _) = stalled_forward_receiver(&c, "    mem_buf_limit 1M\n");
    let port = bound_port(&a);
    let frame = std::sync::Arc::new(small_records_frame());
    let senders: Vec<_> = (0..300)
        .map(|_| {
            let f = frame.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = s.write_all(&f);
                std::thread::sleep(Duration::from_secs(6));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let peak = peak_rss_mib(a.pid());
    eprintln!("300 connections x 10,000 records waiting for admission: peak RSS {peak} MiB");
    assert!(peak < 150, "peak RSS {peak} MiB");
    for s in senders {
        let _ = s.join();
    }
    a.stop(T);
}
