//! A real `redis-server` for the tests of what instances of one deployment
//! share through Redis (limits, the cache, the upstream token): a fake
//! would not show how the real server answers, expires keys or fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;

/// A `redis-server` child process on a loopback port, without persistence;
/// stopped on drop. A missing `redis-server` fails the test with the command
/// that installs it, rather than skipping what the test proves.
pub struct RedisServer {
    child: Child,
    port: u16,
    password: Option<String>,
    /// Reaped: its pid may belong to another process now, never signal it.
    exited: bool,
    frozen: bool,
}

impl RedisServer {
    /// A server on a free port, without a password.
    pub fn start() -> Self {
        Self::start_on(free_port(), None)
    }

    /// A server that requires `password` (`requirepass`); [`RedisServer::url`]
    /// then carries it, as a managed Redis URL does, so a test can check
    /// that it never reaches a log line.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_on(free_port(), Some(password))
    }

    /// A server on `port`: e.g. the port of one the test killed, to bring
    /// "the same" Redis back. Returns once it answers `PING`.
    pub fn start_on(port: u16, password: Option<&str>) -> Self {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server is not installed: run bash .ci/setup")
            }
            Err(err) => panic!("could not start redis-server: {err}"),
        };
        let mut server = Self {
            child,
            port,
            password: password.map(str::to_owned),
            exited: false,
            frozen: false,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = self.query(&["PING"], Duration::from_secs(1));
            if reply.is_ok_and(|lines| lines.last().is_some_and(|line| line == "+PONG")) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = true;
                panic!(
                    "redis-server exited at start ({status}); is port {} taken?",
                    self.port
                );
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, with the password if it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// How many keys the server holds (`DBSIZE`): proof that a client
    /// really wrote to it, not fell back to memory.
    pub fn key_count(&self) -> u64 {
        let reply = self
            .query(&["DBSIZE"], Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("DBSIZE failed: {err}"));
        assert!(
            !reply.iter().any(|line| line.starts_with('-')),
            "redis refused: {reply:?}"
        );
        reply
            .last()
            .and_then(|line| line.strip_prefix(':'))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("unexpected DBSIZE reply: {reply:?}"))
    }

    fn query(&self, command: &[&str], timeout: Duration) -> std::io::Result<Vec<String>> {
        query(self.port, self.password.as_deref(), command, timeout)
    }

    /// Stops the server at once (`SIGKILL`), as a crash or a lost node would.
    pub fn kill(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open but nothing
    /// answers, the worst case for a client (a partition, not a refusal).
    pub fn freeze(&mut self) {
        if !self.exited {
            signal(self.child.id(), "-STOP");
            self.frozen = true;
        }
    }

    /// Lets a frozen server run again (`SIGCONT`).
    pub fn thaw(&mut self) {
        if self.frozen && !self.exited {
            signal(self.child.id(), "-CONT");
            self.frozen = false;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// Sends `command` (after `AUTH` when `password` is given) over a fresh
/// connection and returns the one-line replies, `AUTH`'s first. Only for
/// commands whose reply is one line (`+`, `-` or `:`).
fn query(
    port: u16,
    password: Option<&str>,
    command: &[&str],
    timeout: Duration,
) -> std::io::Result<Vec<String>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut request = Vec::new();
    if let Some(password) = password {
        encode(&mut request, &["AUTH", password]);
    }
    encode(&mut request, command);
    stream.write_all(&request)?;
    let expected = if password.is_some() { 2 } else { 1 };
    let mut reply = String::new();
    let mut buffer = [0u8; 256];
    while reply.matches("\r\n").count() < expected {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        reply.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    Ok(reply.lines().map(str::to_owned).collect())
}

/// A command as a RESP array of bulk strings, which (unlike the inline
/// form) carries any password byte for byte.
fn encode(request: &mut Vec<u8>, args: &[&str]) {
    request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw `SET key value`, so the tests need no Redis client crate.
    fn set(server: &RedisServer, key: &str) {
        let reply = server
            .query(&["SET", key, "1"], Duration::from_secs(5))
            .unwrap();
        assert_eq!(reply.last().map(String::as_str), Some("+OK"), "{reply:?}");
    }

    fn answers(server: &RedisServer) -> bool {
        server
            .query(&["PING"], Duration::from_millis(300))
            .is_ok_and(|lines| lines.last().is_some_and(|line| line == "+PONG"))
    }

    #[test]
    fn counts_keys_and_stops_on_drop() {
        let server = RedisServer::start();
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert_eq!(server.key_count(), 0);
        set(&server, "a");
        set(&server, "b");
        assert_eq!(server.key_count(), 2);
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn a_password_is_required_and_carried_by_the_url() {
        let server = RedisServer::start_with_password("pw with spaces");
        assert_eq!(
            server.url(),
            format!("redis://:pw with spaces@127.0.0.1:{}", server.port())
        );
        set(&server, "a");
        assert_eq!(server.key_count(), 1);
        let reply = query(server.port(), None, &["DBSIZE"], Duration::from_secs(5)).unwrap();
        assert!(reply[0].starts_with("-NOAUTH"), "{reply:?}");
    }

    #[test]
    fn frozen_it_accepts_but_never_answers_and_thawed_it_answers_again() {
        let mut server = RedisServer::start();
        server.freeze();
        assert!(TcpStream::connect(("127.0.0.1", server.port())).is_ok());
        assert!(!answers(&server));
        server.thaw();
        assert!(answers(&server));
    }

    #[test]
    fn killed_it_refuses_and_a_new_one_can_take_its_port() {
        let mut server = RedisServer::start();
        let port = server.port();
        server.kill();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        let again = RedisServer::start_on(port, None);
        assert!(answers(&again));
    }
}
