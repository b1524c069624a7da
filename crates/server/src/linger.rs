//! Closing a client socket without destroying the answer the client has not
//! read yet.
//!
//! Closing a socket that still has unread bytes from the client makes the
//! kernel send a reset, and a reset makes the client's kernel discard what
//! it received but the client did not read yet. A client that writes its
//! whole body before reading (Python's `urllib`, `curl -d @big`) therefore
//! sees a broken pipe instead of the 413 the proxy answered to a body far
//! over the limit. So when hyper is done with a connection and the client
//! is still sending, the server shuts its side for writing (the answer and
//! a FIN reach the client) and reads and discards what the client sends,
//! for a bounded time and number of bytes, until the client closes.

use std::io::{self, Read as _, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long a lingering close may last in all.
const LINGER_TIME: Duration = Duration::from_secs(10);
/// A lingering close ends when the client sends nothing for this long.
const LINGER_QUIET: Duration = Duration::from_secs(2);
/// A lingering close ends after discarding this much.
const LINGER_BYTES: usize = 32 * 1024 * 1024;

/// The client socket as hyper sees it. When hyper lets go of it, the socket
/// comes back to the connection's task instead of being closed, so that the
/// task can close it with [`close`].
pub struct LentSocket {
    stream: Option<TcpStream>,
    give_back: Option<oneshot::Sender<TcpStream>>,
}

impl LentSocket {
    pub fn new(stream: TcpStream) -> (Self, oneshot::Receiver<TcpStream>) {
        let (give_back, returned) = oneshot::channel();
        let socket = Self {
            stream: Some(stream),
            give_back: Some(give_back),
        };
        (socket, returned)
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        // `stream` is only taken by `drop`.
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for LentSocket {
    fn drop(&mut self) {
        if let (Some(stream), Some(give_back)) = (self.stream.take(), self.give_back.take()) {
            // The task may have gone (the server is stopping): then it closes here.
            let _ = give_back.send(stream);
        }
    }
}

impl AsyncRead for LentSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_read(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl AsyncWrite for LentSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_write(cx, buf),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_write_vectored(cx, bufs),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_flush(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_shutdown(cx),
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

/// Closes a socket hyper is done with: at once if the client sent nothing
/// that is still unread, else after a lingering close (see the module
/// docs). `interrupt` ends the lingering early (the connection was picked
/// to make room, or the server is stopping).
pub async fn close(stream: TcpStream, interrupt: impl Future<Output = ()>) {
    let Some((stream, discarded)) = unread_input(stream) else {
        return;
    };
    let linger = async move {
        let mut stream = stream;
        // The answer is already written: a FIN after it tells the client
        // that nothing more comes, so it reads the answer and closes.
        let _ = stream.shutdown().await;
        let mut discarded = discarded;
        let mut buf = vec![0u8; 64 * 1024];
        while discarded < LINGER_BYTES {
            match tokio::time::timeout(LINGER_QUIET, stream.read(&mut buf)).await {
                Ok(Ok(read)) if read > 0 => discarded += read,
                _ => break,
            }
        }
        tracing::debug!(discarded, "lingering close done");
    };
    tokio::select! {
        () = linger => {}
        () = tokio::time::sleep(LINGER_TIME) => {}
        () = interrupt => {}
    }
}

/// `Some` (the socket back, and how many bytes were read off it) when the
/// client has sent bytes nobody read; `None` once the socket is closed.
///
/// The check reads the socket directly (a plain non-blocking read):
/// tokio's cached readiness could still say "nothing to read" for data
/// that arrived after hyper's last read.
fn unread_input(stream: TcpStream) -> Option<(TcpStream, usize)> {
    let mut stream = stream.into_std().ok()?;
    let mut probe = [0u8; 1024];
    let read = match stream.read(&mut probe) {
        Ok(read) if read > 0 => read,
        // End of input, nothing pending, or a broken socket: close now.
        _ => return None,
    };
    TcpStream::from_std(stream)
        .ok()
        .map(|stream| (stream, read))
}

/// Answers a connection the server has no room for with a 503 and closes it.
/// The request is not read (that would take the time the server lacks):
/// the answer is written at once, and what the client has sent so far is
/// read off first so that the close does not reset the answer away.
pub fn refuse(stream: TcpStream, limit: usize) {
    let request_id = uuid::Uuid::new_v4();
    let body = format!(
        concat!(
            r#"{{"status":503,"message":"the server is at its limit of {limit} open connections and all are busy","#,
            r#""code":"too_many_connections","#,
            r#""hint":"Retry in a few seconds. The operator can raise GIGACHAT_PROXY_MAX_CONNECTIONS (and the file-descriptor limit, ulimit -n).","#,
            r#""request_id":"{request_id}"}}"#
        ),
        limit = limit,
        request_id = request_id,
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: application/json; charset=utf-8\r\n\
         cache-control: no-store\r\n\
         retry-after: 5\r\n\
         x-request-id: {request_id}\r\n\
         connection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    // A fresh socket's send buffer takes a few hundred bytes at once.
    let _ = stream.write(response.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut scratch) {
            Ok(read) if read > 0 => {}
            _ => break,
        }
    }
}
