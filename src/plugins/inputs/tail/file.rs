//! The sans-IO state of one tailed file: splitting bytes into lines (long lines,
//! `\r\n`, the held unterminated line), tracking which read offsets are delivered, and
//! deciding what a `stat` means (truncated, deleted, rotated) and when a file may be
//! closed. No syscalls and no clock here: callers pass bytes, stats and `Instant`s.
//! Fluent Bit: plugins/in_tail/tail_file.c (process_content, tail_signal / rotation),
//! plugins/in_tail/tail_fs_inotify.c (reconcile_file_state)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::LongLines;

/// One complete line: its bytes without `\n` (and without a trailing `\r`), and the
/// file offset of its first byte.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub offset: u64,
    pub bytes: &'a [u8],
    /// The offset after its `\n`: where reading resumes once this line is done.
    pub end: u64,
}

/// What one `split` did besides emitting lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Lines longer than the maximum that were skipped or truncated.
    pub long_lines: u32,
    /// Reading must stop: a line longer than the maximum starts at this offset and the
    /// policy is `LongLines::Stop`.
    pub stalled_at: Option<u64>,
}

/// A file's read buffer: bytes read but not yet consumed as complete lines.
///
/// Reads go straight into `space()`; `split` hands out complete lines as slices of the
/// buffer (one `memchr` pass, no copy) and moves the unterminated rest to the front.
pub struct LineBuf {
    buf: Vec<u8>,
    filled: usize,
    /// File offset of `buf[0]`: everything before it is consumed.
    base: u64,
    read_size: usize,
    max_line: usize,
    policy: LongLines,
    skip_empty: bool,
    /// Inside a long line whose start was skipped or truncated: drop bytes up to `\n`.
    discarding: bool,
}

impl LineBuf {
    pub fn new(
        offset: u64,
        read_size: usize,
        max_line: usize,
        policy: LongLines,
        skip_empty: bool,
    ) -> LineBuf {
        LineBuf {
            buf: Vec::new(),
            filled: 0,
            base: offset,
            read_size,
            max_line,
            policy,
            skip_empty,
            discarding: false,
        }
    }

    /// Offset up to which every byte is consumed (the start of the held partial line).
    pub fn consumed(&self) -> u64 {
        self.base
    }

    /// Offset of the next byte to read from the file.
    pub fn read_pos(&self) -> u64 {
        self.base + self.filled as u64
    }

    /// Where the next read goes: at least `read_size` bytes.
    pub fn space(&mut self) -> &mut [u8] {
        let want = self.filled + self.read_size;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Records that `n` bytes were read into `space()`.
    pub fn filled(&mut self, n: usize) {
        self.filled += n;
        debug_assert!(self.filled <= self.buf.len());
    }

    /// Starts over at `offset` (a truncated file), dropping what is held.
    pub fn reset(&mut self, offset: u64) {
        self.base = offset;
        self.filled = 0;
        self.discarding = false;
    }

    /// Emits every complete line, applies the long-line policy, and keeps the rest.
    pub fn split(&mut self, mut emit: impl FnMut(Line<'_>)) -> Split {
        let mut out = Split::default();
        let mut pos = 0;
        while let Some(i) = memchr::memchr(b'\n', &self.buf[pos..self.filled]) {
            let start = pos;
            let end = pos + i;
            pos = end + 1;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            let mut bytes = &self.buf[start..end];
            if bytes.len() > self.max_line {
                match self.policy {
                    LongLines::Stop => {
                        out.stalled_at = Some(self.base + start as u64);
                        self.consume(start);
                        return out;
                    }
                    LongLines::Skip => {
                        out.long_lines += 1;
                        continue;
                    }
                    LongLines::Truncate => {
                        out.long_lines += 1;
                        bytes = &bytes[..self.max_line];
                    }
                }
            } else if let Some(b) = bytes.strip_suffix(b"\r") {
                bytes = b;
            }
            if self.skip_empty && bytes.is_empty() {
                continue;
            }
            emit(Line {
                offset: self.base + start as u64,
                bytes,
                end: self.base + pos as u64,
            });
        }
        if self.discarding {
            pos = self.filled;
        } else if self.filled - pos > self.max_line {
            match self.policy {
                LongLines::Stop => out.stalled_at = Some(self.base + pos as u64),
                LongLines::Skip => {
                    out.long_lines += 1;
                    self.discarding = true;
                    pos = self.filled;
                }
                LongLines::Truncate => {
                    out.long_lines += 1;
                    emit(Line {
                        offset: self.base + pos as u64,
                        bytes: &self.buf[pos..pos + self.max_line],
                        end: self.base + self.filled as u64,
                    });
                    self.discarding = true;
                    pos = self.filled;
                }
            }
        }
        self.consume(pos);
        out
    }

    /// The held unterminated line, consumed: for a file that is done (rotated and
    /// drained, deleted, truncated, or at exit).
    pub fn take_partial(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.filled == 0 || self.discarding {
            self.consume(self.filled);
            self.discarding = false;
            return None;
        }
        let mut bytes = self.buf[..self.filled.min(self.max_line)].to_vec();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
        let offset = self.base;
        self.consume(self.filled);
        (!(self.skip_empty && bytes.is_empty())).then_some((offset, bytes))
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
        self.base += n as u64;
        // A long line may have grown the buffer: give the memory back once it is gone.
        if self.buf.len() > 2 * self.read_size && self.filled <= self.read_size {
            self.buf.truncate(self.filled + self.read_size);
            self.buf.shrink_to_fit();
        }
    }
}

/// Batches of one file sent and not yet delivered, in send order; the committed
/// offset advances only over a contiguous prefix of delivered batches, so it never
/// passes a line that some output still holds.
#[derive(Debug)]
pub struct Inflight {
    queue: VecDeque<Batch>,
    /// Sequence number of `queue[0]`.
    first: u64,
    /// Acks of batches before this one do not move `committed` (sent before a truncation).
    floor: u64,
    committed: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Batch {
    end: u64,
    bytes: u64,
    acked: bool,
}

impl Inflight {
    pub fn new(committed: u64) -> Inflight {
        Inflight {
            queue: VecDeque::new(),
            first: 0,
            floor: 0,
            committed,
            bytes: 0,
        }
    }

    /// A batch that covers the file up to `end` (`bytes` long) was sent; returns its
    /// sequence number for `ack`.
    pub fn push(&mut self, end: u64, bytes: u64) -> u64 {
        self.queue.push_back(Batch {
            end,
            bytes,
            acked: false,
        });
        self.bytes += bytes;
        self.first + self.queue.len() as u64 - 1
    }

    /// Batch `seq` is delivered (or given up on by every output). Returns whether the
    /// committed offset moved.
    pub fn ack(&mut self, seq: u64) -> bool {
        let Some(i) = seq.checked_sub(self.first) else {
            return false;
        };
        let Some(b) = self.queue.get_mut(i as usize) else {
            return false;
        };
        if b.acked {
            return false;
        }
        b.acked = true;
        self.bytes -= b.bytes;
        let mut moved = false;
        while self.queue.front().is_some_and(|b| b.acked) {
            let b = self.queue.pop_front().expect("front exists");
            if self.first >= self.floor {
                self.committed = b.end;
                moved = true;
            }
            self.first += 1;
        }
        moved
    }

    /// The file was truncated: the resume point is `to`, whatever old batches do.
    pub fn reset(&mut self, to: u64) {
        self.floor = self.first + self.queue.len() as u64;
        self.committed = to;
    }

    /// The offset up to which every line was delivered.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Bytes sent and not delivered yet.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// What `fstat` of the open file and `stat` of its path say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub size: u64,
    pub nlink: u64,
    pub ino: u64,
    /// Inode at the file's path now; `None` if nothing is there.
    pub path_ino: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// Smaller than what was read: copytruncate or `> file`. Read again from 0.
    Truncated,
    /// Unlinked: read to its end, then close.
    Deleted,
    /// Its path now names another file or nothing: renamed (rotation). Keep reading it.
    Moved,
}

/// What happened to a file read up to `read_pos`.
pub fn detect(read_pos: u64, o: Observed) -> Change {
    if o.size < read_pos {
        Change::Truncated
    } else if o.nlink == 0 {
        Change::Deleted
    } else if o.path_ino != Some(o.ino) {
        Change::Moved
    } else {
        Change::None
    }
}

/// Where a file is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    /// Rotated away from every configured pattern at this time.
    Rotated(Instant),
    Deleted,
}

/// Whether a file can be closed now. A file with unread bytes is never closed: a
/// rotated one stays open until read to its end and then `rotate_wait` without new
/// data, however long the agent is behind (Fluent Bit closes it after `rotate_wait`
/// whatever is left).
pub fn may_close(
    state: Lifecycle,
    at_eof: bool,
    last_data: Instant,
    now: Instant,
    rotate_wait: Duration,
) -> bool {
    match state {
        Lifecycle::Active => false,
        Lifecycle::Deleted => at_eof,
        Lifecycle::Rotated(at) => {
            at_eof && now.saturating_duration_since(at.max(last_data)) >= rotate_wait
        }
    }
}

/// How many leading bytes identify a file: a stored offset applies to an inode only if
/// its first bytes still hash the same (inode reuse, or a file replaced while stopped).
pub const FINGERPRINT_LEN: usize = 1024;

/// Length and FNV-1a hash of a file's first bytes (up to `FINGERPRINT_LEN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    pub fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FINGERPRINT_LEN)];
        Fingerprint {
            len: head.len() as u32,
            hash: fnv1a(head),
        }
    }

    /// Whether it covers all the bytes it can.
    pub fn is_full(&self) -> bool {
        self.len as usize >= FINGERPRINT_LEN
    }
}

/// 64-bit FNV-1a: stable across builds (unlike std's hasher), enough to tell two log
/// files apart, also used as the db's checksum.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(max: usize, policy: LongLines) -> LineBuf {
        LineBuf::new(0, 64, max, policy, false)
    }

    fn feed(b: &mut LineBuf, data: &[u8]) -> (Vec<(u64, String)>, Split) {
        b.space()[..data.len()].copy_from_slice(data);
        b.filled(data.len());
        let mut lines = Vec::new();
        let s = b.split(|l| lines.push((l.offset, String::from_utf8_lossy(l.bytes).into())));
        (lines, s)
    }

    #[test]
    fn splits_lines_strips_cr_and_holds_the_unterminated_rest() {
        let mut b = buf(100, LongLines::Stop);
        let (lines, s) = feed(&mut b, b"one\r\ntwo\n\nthr");
        assert_eq!(
            lines,
            [(0, "one".into()), (5, "two".into()), (9, "".into())]
        );
        assert_eq!(s, Split::default());
        assert_eq!((b.consumed(), b.read_pos(), b.filled), (10, 13, 3));
        let (lines, _) = feed(&mut b, b"ee\n");
        assert_eq!(lines, [(10, "three".into())]);
        assert_eq!(b.consumed(), 16);
        assert_eq!(b.take_partial(), None);
    }

    #[test]
    fn skip_empty_lines() {
        let mut b = LineBuf::new(0, 16, 100, LongLines::Stop, true);
        let (lines, _) = feed(&mut b, b"\n\r\na\n");
        assert_eq!(lines, [(3, "a".into())]);
        assert_eq!(b.consumed(), 5);
    }

    #[test]
    fn long_lines_skipped_once_whole_or_across_reads() {
        let mut b = buf(4, LongLines::Skip);
        let (lines, s) = feed(&mut b, b"ok\n0123456789\nyes\n");
        assert_eq!(lines, [(0, "ok".into()), (14, "yes".into())]);
        assert_eq!(s.long_lines, 1);
        // A long line without its newline yet: dropped as it comes, up to the newline.
        let (lines, s) = feed(&mut b, b"abcdefgh");
        assert!(lines.is_empty());
        assert_eq!(s.long_lines, 1);
        assert_eq!(b.filled, 0);
        let (lines, s) = feed(&mut b, b"ijk\nz\n");
        assert_eq!(lines, [(30, "z".into())]);
        assert_eq!(s.long_lines, 0);
        assert_eq!(b.consumed(), 32);
    }

    #[test]
    fn long_lines_truncated() {
        let mut b = buf(4, LongLines::Truncate);
        let (lines, s) = feed(&mut b, b"0123456789\nab");
        assert_eq!(lines, [(0, "0123".into())]);
        assert_eq!(s.long_lines, 1);
        let (lines, s) = feed(&mut b, b"cdefg");
        assert_eq!(lines, [(11, "abcd".into())]);
        assert_eq!(s.long_lines, 1);
        let (lines, _) = feed(&mut b, b"h\nxy\n");
        assert_eq!(lines, [(20, "xy".into())]);
    }

    #[test]
    fn long_line_stops_the_file_at_its_start() {
        let mut b = buf(4, LongLines::Stop);
        let (lines, s) = feed(&mut b, b"ok\n0123456789\nyes\n");
        assert_eq!(lines, [(0, "ok".into())]);
        assert_eq!(s.stalled_at, Some(3));
        assert_eq!(b.consumed(), 3);
        let mut b = buf(4, LongLines::Stop);
        let (_, s) = feed(&mut b, b"a\n012345");
        assert_eq!(s.stalled_at, Some(2));
        assert_eq!(b.consumed(), 2);
    }

    #[test]
    fn partial_line_taken_once_and_reset_restarts() {
        let mut b = buf(100, LongLines::Stop);
        feed(&mut b, b"a\nlast\r");
        assert_eq!(b.take_partial(), Some((2, b"last".to_vec())));
        assert_eq!(b.take_partial(), None);
        assert_eq!(b.consumed(), 7);
        b.reset(0);
        let (lines, _) = feed(&mut b, b"new\n");
        assert_eq!(lines, [(0, "new".into())]);
    }

    #[test]
    fn buffer_grows_for_a_long_partial_and_shrinks_after() {
        let mut b = LineBuf::new(0, 16, 1000, LongLines::Stop, false);
        for _ in 0..10 {
            feed(&mut b, &[b'x'; 16]);
        }
        assert_eq!(b.filled, 160);
        let (lines, _) = feed(&mut b, b"\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].1.len(), 160);
        assert!(b.buf.len() <= 32, "{}", b.buf.len());
    }

    #[test]
    fn commits_only_a_contiguous_acked_prefix() {
        let mut f = Inflight::new(10);
        let a = f.push(100, 90);
        let b = f.push(200, 100);
        let c = f.push(300, 100);
        assert_eq!(f.bytes(), 290);
        assert!(!f.ack(b), "b is delivered but a is not");
        assert_eq!(f.committed(), 10);
        assert!(f.ack(a));
        assert_eq!(f.committed(), 200);
        assert!(!f.ack(a), "a second ack is ignored");
        assert!(f.ack(c));
        assert_eq!((f.committed(), f.bytes()), (300, 0));
        assert!(f.is_empty());
        assert!(!f.ack(7), "unknown sequence");
    }

    #[test]
    fn acks_sent_before_a_truncation_do_not_commit() {
        let mut f = Inflight::new(0);
        let old = f.push(5000, 5000);
        f.reset(0);
        let new = f.push(40, 40);
        assert!(!f.ack(old));
        assert_eq!(f.committed(), 0);
        assert!(f.ack(new));
        assert_eq!(f.committed(), 40);
    }

    fn obs(size: u64, nlink: u64, path_ino: Option<u64>) -> Observed {
        Observed {
            size,
            nlink,
            ino: 7,
            path_ino,
        }
    }

    #[test]
    fn what_a_stat_means() {
        assert_eq!(detect(100, obs(100, 1, Some(7))), Change::None);
        assert_eq!(detect(100, obs(150, 1, Some(7))), Change::None);
        assert_eq!(detect(100, obs(0, 1, Some(7))), Change::Truncated);
        assert_eq!(detect(100, obs(100, 0, None)), Change::Deleted);
        assert_eq!(detect(100, obs(100, 1, Some(8))), Change::Moved);
        assert_eq!(detect(100, obs(100, 1, None)), Change::Moved);
    }

    #[test]
    fn rotated_files_close_only_when_drained_and_quiet() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(5);
        let s = |n| t0 + Duration::from_secs(n);
        let rotated = Lifecycle::Rotated(t0);
        assert!(!may_close(Lifecycle::Active, true, t0, s(100), wait));
        assert!(!may_close(rotated, true, t0, s(4), wait));
        assert!(may_close(rotated, true, t0, s(5), wait));
        // Behind: unread bytes keep it open however long it has been.
        assert!(!may_close(rotated, false, t0, s(1000), wait));
        // Data read late restarts the wait.
        assert!(!may_close(rotated, true, s(998), s(1000), wait));
        assert!(may_close(Lifecycle::Deleted, true, t0, t0, wait));
        assert!(!may_close(Lifecycle::Deleted, false, t0, s(1000), wait));
    }

    #[test]
    fn fingerprints() {
        let a = Fingerprint::of(b"hello");
        assert_eq!(a.len, 5);
        assert_eq!(a, Fingerprint::of(b"hello"));
        assert_ne!(a, Fingerprint::of(b"hellp"));
        assert!(!a.is_full());
        let big = vec![1u8; 5000];
        let f = Fingerprint::of(&big);
        assert!(f.is_full());
        assert_eq!(f, Fingerprint::of(&big[..FINGERPRINT_LEN]));
        // Known FNV-1a 64 vectors.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
