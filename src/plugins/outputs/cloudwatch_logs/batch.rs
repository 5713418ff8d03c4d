//! PutLogEvents batches, cut where Fluent Bit cuts them (cloudwatch_api.c `add_event`,
//! `process_event`, `send_log_events`): sans-IO, the output sends what [`Batch::add`]
//! says is due.
//!
//! Fluent Bit's accounting, which keeps every request within CloudWatch's limits:
//! a payload is counted as 72 + 4 bytes plus the JSON-escaped group and stream names,
//! plus each event's escaped message and 42 bytes; it may not pass 1,048,576 bytes
//! (CloudWatch counts the raw message plus 26). At most 10,000 events (sent as soon as
//! the 10,000th is in), and the events of one request within 24 hours of each other.
//! A batch is for one stream: an event of another stream sends the batch first. The
//! escaped messages of a batch also share a 1 MiB buffer: a message that does not fit
//! what is left sends the batch first, and one that does not fit an empty buffer is
//! discarded ("Discarding massive log record"); a message over 1,000,000 bytes is cut
//! to that length. Events are sorted by time (stable) when the request is written.

use std::ops::Range;

/// Most bytes of a PutLogEvents payload, and of a batch's message buffer.
pub const PAYLOAD_SIZE: usize = 1_048_576;
/// Most events of one PutLogEvents call.
pub const MAX_EVENTS: usize = 10_000;
/// Longest message sent; longer ones are cut (Fluent Bit's MAX_EVENT_LEN).
pub const MAX_EVENT_LEN: usize = 1_000_000;
const HEADER_LEN: usize = 72;
const FOOTER_LEN: usize = 4;
const PER_EVENT_LEN: usize = 42;
const ONE_DAY_MS: u64 = 86_400_000;

/// One log event: its time in milliseconds, its escaped message in the batch's buffer,
/// and the chunk record it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub ts: u64,
    pub msg: Range<usize>,
    pub record: usize,
}

/// What [`Batch::add`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// In the batch; the batch is now due (its 10,000th event) when `true`.
    In(bool),
    /// Send the batch first, then add the event again.
    SendFirst,
    /// The event can never be sent (larger than a whole request): dropped.
    Discard,
}

/// The events of the next PutLogEvents call, for one stream.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Event>,
    /// The escaped messages, back to back.
    pub buf: Vec<u8>,
    /// Fluent Bit's `tmp_buf_offset`: the message bytes taken (one more per `log_key`
    /// event, whose opening quote it skips).
    tmp_used: usize,
    /// Fluent Bit's `data_size`: the projected payload size.
    data_size: usize,
    /// Escaped length of the group and stream names (part of `data_size`).
    names_len: usize,
    oldest: u64,
    newest: u64,
}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            events: Vec::new(),
            buf: Vec::with_capacity(64 * 1024),
            tmp_used: 0,
            data_size: HEADER_LEN + FOOTER_LEN,
            names_len: 0,
            oldest: 0,
            newest: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Empties the batch for a stream whose escaped names take `names_len` bytes.
    pub fn reset(&mut self, names_len: usize) {
        self.events.clear();
        self.buf.clear();
        self.tmp_used = 0;
        self.names_len = names_len;
        self.data_size = HEADER_LEN + FOOTER_LEN + names_len;
        self.oldest = 0;
        self.newest = 0;
    }

    /// Adds the escaped message `msg` at `ts` ms from record `record`. `log_key`: the
    /// message is a value's text (Fluent Bit needs two more bytes for its quotes).
    pub fn add(&mut self, ts: u64, msg: &[u8], record: usize, log_key: bool) -> Added {
        let left = PAYLOAD_SIZE - self.tmp_used;
        let fits = if log_key {
            msg.len() + 2 < left
        } else {
            msg.len() <= left
        };
        if !fits {
            return if self.events.is_empty() {
                Added::Discard
            } else {
                Added::SendFirst
            };
        }
        let len = truncated_len(msg);
        if self.span_with(ts) >= ONE_DAY_MS {
            return Added::SendFirst;
        }
        if self.data_size + len + PER_EVENT_LEN > PAYLOAD_SIZE {
            return if self.events.is_empty() {
                Added::Discard
            } else {
                Added::SendFirst
            };
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&msg[..len]);
        self.tmp_used += len + usize::from(log_key);
        self.data_size += len + PER_EVENT_LEN;
        if self.oldest == 0 || self.oldest > ts {
            self.oldest = ts;
        }
        if self.newest == 0 || self.newest < ts {
            self.newest = ts;
        }
        self.events.push(Event {
            ts,
            msg: start..start + len,
            record,
        });
        Added::In(self.events.len() == MAX_EVENTS)
    }

    /// Fluent Bit's `stream_time_span`: the batch's span if `ts` joined it.
    fn span_with(&self, ts: u64) -> u64 {
        if self.oldest == 0 || self.newest == 0 {
            0
        } else if self.oldest > ts {
            self.newest - ts
        } else if self.newest < ts {
            ts - self.oldest
        } else {
            self.newest - self.oldest
        }
    }

    /// The PutLogEvents body for `group` and `stream` (escaped names), events sorted by
    /// time; the order is kept in `events` (for partial rejections).
    pub fn payload(&mut self, group: &[u8], stream: &[u8], out: &mut Vec<u8>) {
        self.events.sort_by_key(|e| e.ts);
        out.clear();
        out.extend_from_slice(b"{\"logGroupName\":\"");
        out.extend_from_slice(group);
        out.extend_from_slice(b"\",\"logStreamName\":\"");
        out.extend_from_slice(stream);
        out.extend_from_slice(b"\",\"logEvents\":[");
        for (i, e) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"timestamp\":");
            out.extend_from_slice(itoa::Buffer::new().format(e.ts).as_bytes());
            out.extend_from_slice(b",\"message\":\"");
            out.extend_from_slice(&self.buf[e.msg.clone()]);
            out.extend_from_slice(b"\"}");
        }
        out.extend_from_slice(b"]}");
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// The length `msg` is sent with: at most [`MAX_EVENT_LEN`], and a cut never leaves an
/// unpaired backslash (as Fluent Bit's `truncate_log`), nor half a `\uXXXX` escape or
/// half a UTF-8 character (which Fluent Bit may leave, making the request invalid).
pub fn truncated_len(msg: &[u8]) -> usize {
    if msg.len() <= MAX_EVENT_LEN {
        return msg.len();
    }
    let mut len = MAX_EVENT_LEN;
    // Not inside a UTF-8 character.
    while len > 0 && (msg[len] & 0xc0) == 0x80 {
        len -= 1;
    }
    // Not inside a \uXXXX escape: a backslash-u within the last 5 bytes, itself not
    // escaped, starts one that the cut would split.
    for back in 1..=5.min(len) {
        let i = len - back;
        if msg[i] == b'u' && i > 0 && msg[i - 1] == b'\\' && odd_backslashes_before(msg, i) {
            len = i - 1;
            break;
        }
    }
    // Fluent Bit's rule: an odd run of trailing backslashes ends in a lone one.
    let run = msg[..len].iter().rev().take_while(|&&b| b == b'\\').count();
    if run % 2 == 1 {
        len -= 1;
    }
    len
}

/// Whether the backslashes right before `msg[i]` are an odd run (so `msg[i]` is
/// escaped by the last of them).
fn odd_backslashes_before(msg: &[u8], i: usize) -> bool {
    msg[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(names: usize) -> Batch {
        let mut b = Batch::new();
        b.reset(names);
        b
    }

    #[test]
    fn ten_thousand_events_make_a_due_batch() {
        let mut b = batch(10);
        for i in 0..MAX_EVENTS - 1 {
            assert_eq!(b.add(1000 + i as u64, b"x", i, false), Added::In(false));
        }
        assert_eq!(b.add(5, b"x", 9999, false), Added::In(true));
    }

    #[test]
    fn the_payload_limit_counts_42_bytes_per_event_and_the_names() {
        // 76 + names + n * (len + 42) <= 1,048,576
        let names = 24;
        let msg = vec![b'a'; 1000];
        let per = 1000 + 42;
        let fit = (PAYLOAD_SIZE - 76 - names) / per;
        let mut b = batch(names);
        for i in 0..fit {
            assert_eq!(b.add(1, &msg, i, false), Added::In(false), "event {i}");
        }
        assert_eq!(b.add(1, &msg, fit, false), Added::SendFirst);
        assert_eq!(b.events.len(), fit);
    }

    #[test]
    fn a_day_apart_sends_first() {
        let mut b = batch(0);
        assert_eq!(b.add(1_000, b"a", 0, false), Added::In(false));
        assert_eq!(
            b.add(1_000 + ONE_DAY_MS - 1, b"b", 1, false),
            Added::In(false)
        );
        assert_eq!(b.add(999, b"c", 2, false), Added::SendFirst);
        assert_eq!(b.add(1_000 + ONE_DAY_MS, b"d", 3, false), Added::SendFirst);
    }

    #[test]
    fn oversize_messages_are_cut_or_discarded() {
        let mut b = batch(0);
        let big = vec![b'a'; MAX_EVENT_LEN + 10];
        assert_eq!(b.add(1, &big, 0, false), Added::In(false));
        assert_eq!(b.events[0].msg.len(), MAX_EVENT_LEN);
        // What no longer fits the message buffer sends first...
        assert_eq!(b.add(2, &big, 1, false), Added::SendFirst);
        // ... and what fits no buffer is discarded.
        let mut e = batch(0);
        assert_eq!(
            e.add(1, &vec![b'a'; PAYLOAD_SIZE + 1], 0, false),
            Added::Discard
        );
    }

    #[test]
    fn cuts_keep_escapes_and_characters_whole() {
        let mut m = vec![b'a'; MAX_EVENT_LEN - 1];
        m.extend_from_slice(b"\\\\\\n");
        assert_eq!(truncated_len(&m), MAX_EVENT_LEN - 1);
        let mut m = vec![b'a'; MAX_EVENT_LEN - 2];
        m.extend_from_slice(b"\\u00e9xx");
        assert_eq!(truncated_len(&m), MAX_EVENT_LEN - 2);
        let mut m = vec![b'a'; MAX_EVENT_LEN - 1];
        m.extend_from_slice("é".as_bytes());
        assert_eq!(truncated_len(&m), MAX_EVENT_LEN - 1);
    }

    #[test]
    fn payload_sorts_events_by_time() {
        let mut b = batch(0);
        b.add(30, b"c", 0, false);
        b.add(10, b"a", 1, false);
        b.add(10, b"b", 2, false);
        let mut out = Vec::new();
        b.payload(b"g", b"s", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"logGroupName\":\"g\",\"logStreamName\":\"s\",\"logEvents\":[\
             {\"timestamp\":10,\"message\":\"a\"},{\"timestamp\":10,\"message\":\"b\"},\
             {\"timestamp\":30,\"message\":\"c\"}]}"
        );
        assert_eq!(
            b.events.iter().map(|e| e.record).collect::<Vec<_>>(),
            [1, 2, 0]
        );
    }
}
