//! The `exec:COMMAND` backend: one `sh -c COMMAND` per turn.
//!
//! The child gets one JSON line `{"session_key", "event"}` (the event in its
//! wire form, relay-contract §5.1) on stdin, then EOF; its stdout, minus one
//! trailing newline, is the reply. A non-zero exit is an error. The reply
//! streams line by line: each line the command completes is shown as it
//! comes (where the platform allows edits), so a command that prints as it
//! works is seen working.
//!
//! The child runs in its own process group and the whole group is killed on
//! cancel, on timeout and when the turn's future is dropped: `sh -c 'sleep 30'`
//! forks `sleep`, and killing only `sh` would leave `sleep` running (holding
//! the stdout pipe open, so the turn would not even end). After a normal
//! exit the group is killed too, while the exited leader is still a zombie
//! (its pid, the group id, cannot have been reused yet): a `cmd &` left
//! behind does not outlive the turn.
//!
//! The child gets a **cleared environment**: only [`BASE_ENV`] (what a shell
//! and its tools need to run) from the gateway's own environment, plus the
//! variables the operator names in `HERMES_AGENT_ENV`. The gateway's own
//! credentials ([`NEVER_PASSED`]) are refused even when named: a command an
//! agent runs must never be able to print the relay secret into a chat.

use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, kill_process_group, pidfd_open};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{Agent, AgentError, ReplySink, TurnInput};

/// Most stdout bytes kept as the reply; the rest is read and discarded so the
/// child never blocks on a full pipe.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Most stderr bytes kept for the error message (the end of it).
const MAX_STDERR_BYTES: usize = 2048;

/// Variables the child inherits from the gateway's environment, when set:
/// what `sh` and ordinary tools need (search path, home, user, locale, time
/// zone, temp dir, terminal type). Nothing here is a credential.
pub const BASE_ENV: [&str; 12] = [
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ",
    "TMPDIR", "TERM",
];

/// The gateway's own credentials: never passed to an agent command, even
/// when `HERMES_AGENT_ENV` names them.
pub const NEVER_PASSED: [&str; 5] = [
    "GATEWAY_RELAY_SECRET",
    "GATEWAY_RELAY_DELIVERY_KEY",
    "GATEWAY_RELAY_ENROLL_TOKEN",
    "HERMES_IDENTITY_TOKEN",
    "HERMES_ADMIN_TOKEN",
];

/// Runs a shell command per turn.
#[derive(Clone)]
pub struct ExecAgent {
    command: String,
    timeout: Duration,
    /// Passed on top of [`BASE_ENV`] (operator-named, resolved at start).
    extra_env: Vec<(String, String)>,
}

impl std::fmt::Debug for ExecAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.extra_env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecAgent")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .field("extra_env", &names)
            .finish()
    }
}

impl ExecAgent {
    /// `command` is run with `sh -c`; a turn taking longer than `timeout` is
    /// killed. The child sees [`BASE_ENV`] only.
    pub fn new(command: String, timeout: Duration) -> Self {
        Self {
            command,
            timeout,
            extra_env: Vec::new(),
        }
    }

    /// The same agent, also passing `extra` to the child. A name in
    /// [`NEVER_PASSED`] is dropped (and should have been refused at start).
    #[must_use]
    pub fn with_env(mut self, extra: Vec<(String, String)>) -> Self {
        self.extra_env = extra
            .into_iter()
            .filter(|(k, _)| !NEVER_PASSED.contains(&k.as_str()))
            .collect();
        self
    }
}

/// Waits until `pid` has exited, without reaping it (a pidfd turns readable
/// when its process is a zombie). `None` when pidfds are unavailable.
///
/// Polled on a blocking thread: registering the fd with the reactor needs
/// `unsafe` (tokio's `AsyncFd::register`), and this wait is short (the
/// leader has closed its output already). If the turn is dropped meanwhile,
/// the group is killed, the pidfd turns readable and the thread ends.
async fn exited_unreaped(pid: Pid) -> Option<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let fd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    tokio::task::spawn_blocking(move || {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        loop {
            match poll(&mut fds, None) {
                Ok(_) => return Some(()),
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// A spawned child whose process group is killed when this is dropped,
/// unless the child was reaped after exiting by itself.
struct GroupChild {
    child: Child,
    pgid: Option<Pid>,
}

impl GroupChild {
    fn kill_group(&mut self) {
        // The leader is not reaped yet, so its pid (= the group id) cannot
        // have been reused: the signal reaches only this turn's processes.
        if let Some(pgid) = self.pgid.take() {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.kill_group();
    }
}

async fn read_bounded<R: AsyncRead + Unpin>(
    mut reader: R,
    limit: usize,
    keep_tail: bool,
) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        let data = chunk.get(..n).unwrap_or_default();
        kept.extend_from_slice(data);
        if kept.len() > limit {
            if keep_tail {
                let excess = kept.len() - limit;
                kept.drain(..excess);
            } else {
                kept.truncate(limit);
            }
        }
    }
}

/// Reads the reply from `reader`, at most `limit` bytes, writing each
/// completed line into `sink` as it comes. What the sink gets is always a
/// prefix of the final reply: a line's newline is written only once the
/// next line starts, so the reply's one trailing newline (dropped from the
/// reply) never reaches it.
async fn read_reply<R: AsyncRead + Unpin>(
    mut reader: R,
    limit: usize,
    sink: &ReplySink,
) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    // `kept[..shown]` is in the sink.
    let mut shown = 0;
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            let end = reply_len(&kept);
            if end > shown {
                sink.push(&String::from_utf8_lossy(
                    kept.get(shown..end).unwrap_or_default(),
                ));
            }
            return Ok(kept);
        }
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
        let fresh = kept.get(shown..).unwrap_or_default();
        if let Some(last_newline) = fresh.iter().rposition(|b| *b == b'\n') {
            let end = shown + last_newline;
            if end > shown {
                sink.push(&String::from_utf8_lossy(
                    kept.get(shown..end).unwrap_or_default(),
                ));
                shown = end;
            }
        }
    }
}

/// The length of stdout that is the reply: one trailing `\n` (or `\r\n`)
/// dropped.
fn reply_len(out: &[u8]) -> usize {
    match out {
        [.., b'\r', b'\n'] => out.len() - 2,
        [.., b'\n'] => out.len() - 1,
        _ => out.len(),
    }
}

impl ExecAgent {
    async fn run(&self, turn: &TurnInput, sink: &ReplySink) -> Result<String, AgentError> {
        let mut line = serde_json::to_vec(&serde_json::json!({
            "session_key": turn.session_key.as_str(),
            "event": &turn.event,
        }))
        .map_err(|e| AgentError::Io(std::io::Error::other(e)))?;
        line.push(b'\n');

        let mut command = Command::new("sh");
        command.arg("-c").arg(&self.command).env_clear();
        for name in BASE_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut guard = GroupChild { child, pgid };

        // Feed stdin while draining the outputs: a large event must not
        // deadlock against a child that writes before it reads.
        let feed = async {
            if let Some(mut stdin) = stdin.take() {
                // A child that exits without reading its input is not an error.
                let _ = stdin.write_all(&line).await;
                let _ = stdin.shutdown().await;
            }
        };
        let out = async {
            match stdout {
                Some(s) => read_reply(s, MAX_REPLY_BYTES, sink).await,
                None => Ok(Vec::new()),
            }
        };
        let err = async {
            match stderr {
                Some(s) => read_bounded(s, MAX_STDERR_BYTES, true).await,
                None => Ok(Vec::new()),
            }
        };
        let ((), out, err) = tokio::join!(feed, out, err);
        // The leader exited (or is about to): kill what it left in its group
        // before reaping it, while the group id still names only this turn's
        // processes.
        if let Some(pgid) = guard.pgid
            && exited_unreaped(pgid).await.is_some()
        {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        let status = guard.child.wait().await?;
        // Reaped: its pid may be reused from now on, so never signal the group again.
        guard.pgid = None;
        let out = out?;
        let err = err.unwrap_or_default();
        if !status.success() {
            return Err(AgentError::Exit {
                status: status.to_string(),
                stderr: String::from_utf8_lossy(&err).trim().to_owned(),
            });
        }
        let end = reply_len(&out);
        Ok(String::from_utf8_lossy(out.get(..end).unwrap_or_default()).into_owned())
    }
}

impl Agent for ExecAgent {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn streams(&self) -> bool {
        true
    }

    async fn respond(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
    ) -> Result<String, AgentError> {
        self.respond_streaming(turn, cancel, ReplySink::none())
            .await
    }

    async fn respond_streaming(
        &self,
        turn: &TurnInput,
        cancel: CancellationToken,
        sink: ReplySink,
    ) -> Result<String, AgentError> {
        // Dropping `run` drops its `GroupChild`, which kills the group.
        tokio::select! {
            result = self.run(turn, &sink) => result,
            () = cancel.cancelled() => Err(AgentError::Cancelled),
            () = tokio::time::sleep(self.timeout) => Err(AgentError::TimedOut(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_protocol::event::MessageEvent;
    use hermes_protocol::session::SessionKey;
    use std::time::Instant;

    fn turn(text: &str) -> TurnInput {
        let mut event = MessageEvent {
            text: text.to_owned(),
            ..MessageEvent::default()
        };
        event.source.chat_id = "c1".to_owned();
        TurnInput {
            session_key: SessionKey::from_wire("agent:main:relay:dm:c1".to_owned()),
            event,
        }
    }

    #[tokio::test]
    async fn lines_stream_as_they_come_and_end_as_the_reply() {
        let agent = ExecAgent::new(
            "printf 'one\\ntwo\\r\\nthree\\n'".into(),
            Duration::from_secs(10),
        );
        let (sink, text) = ReplySink::channel();
        let reply = agent
            .respond_streaming(&turn("x"), CancellationToken::new(), sink)
            .await
            .expect("runs");
        assert_eq!(reply, "one\ntwo\r\nthree");
        assert_eq!(*text.borrow(), reply, "the sink ends holding the reply");

        // A command still working has shown its first line already.
        let agent = ExecAgent::new(
            "printf 'first\\n'; sleep 30".into(),
            Duration::from_secs(60),
        );
        let (sink, mut text) = ReplySink::channel();
        let cancel = CancellationToken::new();
        let turn = turn("x");
        let running = agent.respond_streaming(&turn, cancel.clone(), sink);
        let watched = async {
            text.wait_for(|t| t == "first").await.expect("sink alive");
            cancel.cancel();
        };
        let (result, ()) = tokio::join!(running, watched);
        assert!(matches!(result, Err(AgentError::Cancelled)), "{result:?}");
    }

    #[tokio::test]
    async fn cat_echoes_the_json_line_minus_its_newline() {
        let agent = ExecAgent::new("cat".into(), Duration::from_secs(10));
        let input = turn("hi there");
        let reply = agent
            .respond(&input, CancellationToken::new())
            .await
            .expect("cat succeeds");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("stdin was one JSON object");
        assert_eq!(v["session_key"], "agent:main:relay:dm:c1");
        assert_eq!(
            v["event"],
            serde_json::to_value(&input.event).expect("event serializes")
        );
        assert!(!reply.ends_with('\n'), "one trailing newline trimmed");
    }

    #[tokio::test]
    async fn non_zero_exit_is_an_error_with_stderr() {
        let agent = ExecAgent::new("echo boom >&2; exit 3".into(), Duration::from_secs(10));
        let err = agent
            .respond(&turn("x"), CancellationToken::new())
            .await
            .expect_err("exit 3 fails");
        match err {
            AgentError::Exit { status, stderr } => {
                assert!(status.contains('3'), "status names the code: {status}");
                assert_eq!(stderr, "boom");
            }
            other => panic!("expected an exit error, got {other:?}"),
        }
    }

    /// Whether any live (non-zombie) process is in group `pgid`. Read from
    /// /proc rather than probed with signal 0, which also "finds" zombies that
    /// a container's init may never reap.
    fn group_alive(pgid: i32) -> bool {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return false;
        };
        entries.flatten().any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                return false;
            };
            // After the parenthesised command name: state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let state = fields.first().copied().unwrap_or("Z");
            let pgrp = fields.get(2).and_then(|f| f.parse::<i32>().ok());
            pgrp == Some(pgid) && state != "Z" && state != "X"
        })
    }

    async fn wait_for_pid_file(path: &std::path::Path) -> i32 {
        loop {
            if let Ok(s) = tokio::fs::read_to_string(path).await
                && let Ok(pid) = s.trim().parse::<i32>()
            {
                return pid;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("hermes-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pid_file = dir.join("cancel.pid");
        let _ = std::fs::remove_file(&pid_file);
        // `$$` is the shell, which leads the new group; `sleep` is its child.
        let agent = ExecAgent::new(
            format!("echo $$ > {}; sleep 30", pid_file.display()),
            Duration::from_secs(60),
        );
        let cancel = CancellationToken::new();
        let input = turn("x");
        let started = Instant::now();
        let turn_fut = agent.respond(&input, cancel.clone());
        let canceller = async {
            let pgid = wait_for_pid_file(&pid_file).await;
            cancel.cancel();
            pgid
        };
        let (result, pgid) = tokio::join!(turn_fut, canceller);
        assert!(matches!(result, Err(AgentError::Cancelled)), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cancel returned promptly"
        );
        // SIGKILL delivery is asynchronous; the group disappears once reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !group_alive(pgid),
            "sleep in group {pgid} still alive after cancel"
        );
    }

    #[tokio::test]
    async fn the_child_sees_a_cleared_environment_plus_what_is_named() {
        // SAFETY-free: the test sets nothing in its own environment; it
        // checks what the child reports against what the gateway holds.
        let agent = ExecAgent::new("env".into(), Duration::from_secs(10)).with_env(vec![
            ("AGENT_DB_URL".into(), "postgres://agent".into()),
            ("GATEWAY_RELAY_SECRET".into(), "must-not-pass".into()),
        ]);
        let reply = agent
            .respond(&turn("x"), CancellationToken::new())
            .await
            .expect("env runs");
        let names: Vec<&str> = reply
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for name in &names {
            assert!(
                BASE_ENV.contains(name)
                    || *name == "AGENT_DB_URL"
                    || *name == "PWD"
                    || *name == "SHLVL"
                    || *name == "_",
                "{name} reached the child"
            );
        }
        assert!(reply.contains("AGENT_DB_URL=postgres://agent"), "{reply}");
        assert!(!reply.contains("must-not-pass"), "{reply}");
        assert!(
            names.contains(&"PATH") == std::env::var_os("PATH").is_some(),
            "PATH passes when set"
        );
    }

    #[tokio::test]
    async fn what_the_turn_leaves_behind_is_killed_after_a_normal_exit() {
        let dir = tempfile_dir("bg");
        let pid_file = dir.join("bg.pid");
        // The background `sleep` does not hold stdout, so the turn ends as
        // soon as `sh` exits; `sleep` stays in the group.
        let agent = ExecAgent::new(
            format!(
                "sleep 30 >/dev/null 2>&1 </dev/null & echo $$ > {}; echo done",
                pid_file.display()
            ),
            Duration::from_secs(60),
        );
        let reply = agent
            .respond(&turn("x"), CancellationToken::new())
            .await
            .expect("turn succeeds");
        assert_eq!(reply, "done");
        let pgid = wait_for_pid_file(&pid_file).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !group_alive(pgid),
            "a background process of group {pgid} outlived the turn"
        );
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hermes-exec-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[tokio::test]
    async fn timeout_kills_the_turn() {
        let agent = ExecAgent::new("sleep 30".into(), Duration::from_millis(200));
        let started = Instant::now();
        let result = agent.respond(&turn("x"), CancellationToken::new()).await;
        assert!(matches!(result, Err(AgentError::TimedOut(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
