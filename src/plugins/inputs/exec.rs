//! `exec` input: runs a shell command every interval (or once) and makes a record of
//! each line it prints.
//! Fluent Bit: plugins/in_exec/in_exec.c
//!
//! The command runs as `/bin/sh -c COMMAND` in its own process group, its standard
//! output read to the end, then reaped. Each line (at most `buf_size - 1` bytes: a
//! longer one continues as the next line; a trailing newline removed) becomes
//! `{"exec": line}`, or the keys `parser` finds in it. A command still running at the
//! next tick delays it: ticks missed meanwhile are not made up. `oneshot` runs it once;
//! `exit_after_oneshot` then stops the agent, with the command's exit status when
//! `propagate_exit_code` is set (128 + N for a command killed by signal N).

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::{fgets_step, Ticker, MAX_BATCH};
use crate::config::{ConfigError, PropKind, PropSpec, Props};
use crate::event::{EventTime, Map, Record, Str};
use crate::parser::types::text_value;
use crate::parser::Parser;
use crate::pipeline::shutdown::ExitRequest;
use crate::plugins::{BoxFuture, BuildContext, Input, InputContext, InputPlugin, PluginError};

const PROPS: &[PropSpec] = &[
    PropSpec::new(
        "command",
        PropKind::Str,
        None,
        "Set the command to execute (run by /bin/sh -c).",
    ),
    PropSpec::new(
        "parser",
        PropKind::Str,
        None,
        "Set a parser for each line of output.",
    ),
    super::INTERVAL_SEC,
    super::INTERVAL_NSEC,
    PropSpec::new(
        "buf_size",
        PropKind::Size,
        Some("4096"),
        "Set the buffer size: the longest line read at once, plus one.",
    ),
    PropSpec::new(
        "oneshot",
        PropKind::Bool,
        Some("false"),
        "Execute the command only once.",
    ),
    PropSpec::new(
        "exit_after_oneshot",
        PropKind::Bool,
        Some("false"),
        "Exit after the command terminates in one-shot mode (implies oneshot).",
    ),
    PropSpec::new(
        "propagate_exit_code",
        PropKind::Bool,
        Some("false"),
        "Exit with the one-shot command's exit code, by shell conventions (needs exit_after_oneshot).",
    ),
];

pub static PLUGIN: InputPlugin = InputPlugin {
    name: "exec",
    description: "Exec Input",
    props: PROPS,
    net: false,
    upstream: false,
    build,
};

struct ExecInput {
    command: String,
    parser: Option<Arc<Parser>>,
    interval: Duration,
    /// The longest line read at once (`buf_size - 1`, C's `fgets`).
    max_line: usize,
    oneshot: bool,
    exit_after_oneshot: bool,
    propagate_exit_code: bool,
    exit: ExitRequest,
}

fn build(props: &Props, ctx: &BuildContext) -> Result<Box<dyn Input>, ConfigError> {
    let Some(command) = props.str("command").filter(|c| !c.is_empty()) else {
        return Err(ConfigError::invalid(
            props.span(),
            "[input:exec] no input 'command' was given",
            Some("set 'command' to the shell command to run, e.g. 'command uptime'".into()),
        ));
    };
    let parser = ctx.parser(props, "parser")?;
    let buf_size = props.size("buf_size").unwrap_or(4096);
    if !(2..=1 << 30).contains(&buf_size) {
        return Err(props.error("buf_size", "a size from 2 bytes to 1G"));
    }
    let exit_after_oneshot = props.bool("exit_after_oneshot").unwrap_or(false);
    let propagate_exit_code = props.bool("propagate_exit_code").unwrap_or(false);
    if propagate_exit_code && !exit_after_oneshot {
        return Err(ConfigError::invalid(
            props.span_of("propagate_exit_code"),
            "[input:exec] propagate_exit_code=True option makes no sense without exit_after_oneshot=True",
            Some("add 'exit_after_oneshot on', or remove 'propagate_exit_code'".into()),
        ));
    }
    Ok(Box::new(ExecInput {
        command: command.to_string(),
        parser,
        interval: super::interval_or_1s(props)?,
        max_line: buf_size as usize - 1,
        oneshot: exit_after_oneshot || props.bool("oneshot").unwrap_or(false),
        exit_after_oneshot,
        propagate_exit_code,
        exit: ctx.exit.clone(),
    }))
}

/// C's `fgets` on an async reader: one line of at most `max` bytes into `out`;
/// `false` at end of input.
async fn fgets(
    r: &mut (impl AsyncBufRead + Unpin),
    max: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    out.clear();
    let (mut got, mut nul) = (0, false);
    while got < max {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        let (take, ended) = fgets_step(buf, max - got, out, &mut nul);
        got += take;
        r.consume(take);
        if ended {
            break;
        }
    }
    Ok(got > 0)
}

/// The shell's convention for an exit status: the code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        _ => 128,
    }
}

/// Lines that did not match the parser in one run: the first is logged, the rest
/// counted in one line at the end of the run.
#[derive(Default)]
struct Unparsed {
    count: u64,
}

impl ExecInput {
    fn record(
        &self,
        line: &[u8],
        unparsed: &mut Unparsed,
        key: &Str,
        name: &str,
    ) -> Option<Record> {
        let now = EventTime::now();
        let Some(p) = &self.parser else {
            let body: Map = vec![(key.clone(), text_value(line))];
            return Some(Record::new(now, body));
        };
        let mut body = Map::with_capacity(8);
        match p.parse(line, &mut body) {
            Ok(t) => Some(Record::new(t.unwrap_or(now), body)),
            Err(_) => {
                if unparsed.count == 0 {
                    crate::error!(
                        "[input:exec:{name}] parser '{}' returned an error on '{}': line skipped",
                        p.name,
                        String::from_utf8_lossy(line)
                    );
                }
                unparsed.count += 1;
                None
            }
        }
    }

    /// Runs the command once, sending its records; its exit status, `None` when it
    /// could not be started or waited for.
    async fn run_once(
        &self,
        ctx: &mut InputContext,
        key: &Str,
        line: &mut Vec<u8>,
    ) -> Result<Option<ExitStatus>, PluginError> {
        let name = ctx.name.clone();
        let mut child = match tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                crate::error!("[input:exec:{name}] command {} failed: {e}", self.command);
                return Ok(None);
            }
        };
        let pgid = child.id().map(|p| p as i32);
        let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut batch = Vec::new();
        let mut unparsed = Unparsed::default();
        let mut terminated = false;
        loop {
            let more = tokio::select! {
                r = fgets(&mut out, self.max_line, line) => r,
                _ = ctx.shutdown.wait(), if !terminated => {
                    // As Fluent Bit's pre-exit: the whole group is asked to stop, and
                    // what it still prints is read.
                    terminated = true;
                    if let Some(pgid) = pgid {
                        // SAFETY: kill(2) on the process group we created.
                        unsafe { libc::kill(-pgid, libc::SIGTERM) };
                    }
                    continue;
                }
            };
            match more {
                Ok(true) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if let Some(r) = self.record(line, &mut unparsed, key, &name) {
                        batch.push(r);
                    }
                    // Sent when what the pipe held is used up, or a batch is full.
                    if !batch.is_empty()
                        && (out.buffer().is_empty() || batch.len() as u64 >= MAX_BATCH)
                    {
                        ctx.out.send(std::mem::take(&mut batch)).await?;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    crate::error!(
                        "[input:exec:{name}] reading the output of {}: {e}",
                        self.command
                    );
                    break;
                }
            }
        }
        if !batch.is_empty() {
            ctx.out.send(batch).await?;
        }
        if unparsed.count > 1 {
            crate::error!(
                "[input:exec:{name}] {} lines of this run did not match the parser and were skipped",
                unparsed.count
            );
        }
        drop(out);
        match child.wait().await {
            Ok(status) => {
                crate::debug!(
                    "[input:exec:{name}] command {} exited: {status}",
                    self.command
                );
                Ok(Some(status))
            }
            Err(e) => {
                crate::error!("[input:exec:{name}] waiting for {}: {e}", self.command);
                Ok(None)
            }
        }
    }
}

impl Input for ExecInput {
    fn run(self: Box<Self>, mut ctx: InputContext) -> BoxFuture<'static, Result<(), PluginError>> {
        Box::pin(async move {
            let key: Str = Arc::from("exec");
            let mut line = Vec::new();
            if self.oneshot {
                let status = self.run_once(&mut ctx, &key, &mut line).await?;
                if self.exit_after_oneshot {
                    // Fluent Bit: 128 when the status could not be known.
                    let code = status.map_or(128, exit_code);
                    crate::info!(
                        "[input:exec:{}] one-shot command exited, terminating",
                        ctx.name
                    );
                    self.exit
                        .exit(if self.propagate_exit_code { code } else { 0 });
                }
                ctx.shutdown.wait().await;
                return Ok(());
            }
            let mut ticker = Ticker::new(self.interval);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.wait() => return Ok(()),
                    _ = ticker.next_one() => {}
                }
                self.run_once(&mut ctx, &key, &mut line).await?;
                if ctx.shutdown.is_set() {
                    return Ok(());
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut r = BufReader::with_capacity(3, input);
        let (mut out, mut line) = (Vec::new(), Vec::new());
        while fgets(&mut r, max, &mut line).await.unwrap() {
            out.push(line.clone());
        }
        out
    }

    #[tokio::test]
    async fn lines_are_read_as_fgets_does() {
        assert_eq!(
            lines(b"one\ntwo three\n\nlast", 4095).await,
            [&b"one\n"[..], b"two three\n", b"\n", b"last"]
        );
        assert_eq!(lines(b"abcdef\n", 4).await, [&b"abcd"[..], b"ef\n"]);
        assert_eq!(lines(b"a\0b\nc\n", 10).await, [&b"a"[..], b"c\n"]);
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
    }
}
