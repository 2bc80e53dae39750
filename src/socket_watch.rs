//! Ends connections the server cannot otherwise end. actix-http writes a response until the
//! socket takes it; a peer that stops reading leaves the connection, its buffers and our
//! queue in place forever, and a response body that fails (our cut-off) is not even polled
//! while the socket is full. So each connection's socket is known here by its descriptor and
//! inode, and:
//! - `SocketId::cut` shuts the socket down at once (both directions), which wakes actix-http
//!   with an error and makes it drop the connection with everything it held;
//! - a sweep on each worker thread shuts down sockets that have had bytes waiting in the
//!   kernel, with not one more byte acknowledged by the peer, for `write_stall_timeout`.
//!
//! All of it runs on the worker thread that owns the connection, where actix-http also
//! closes the descriptor, so a descriptor number can never be reused by another connection
//! between the identity check and the shutdown.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use ephemera_actors::metrics::Refusal;
use tokio::time::Instant;

/// A connection's socket: its descriptor, and the inode that tells it from a later socket
/// that reuses the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketId {
    fd: RawFd,
    inode: u64,
}

impl SocketId {
    /// The socket behind `fd`, as it is now.
    pub fn of(fd: RawFd) -> Option<SocketId> {
        inode_of(fd).map(|inode| SocketId { fd, inode })
    }

    /// Whether `fd` still is this socket.
    fn is_current(&self) -> bool {
        inode_of(self.fd) == Some(self.inode)
    }

    /// Shuts the socket down in both directions, if it is still open. actix-http then fails
    /// its next read or write and drops the connection.
    pub fn cut(&self) {
        if self.is_current() {
            // SAFETY: shutdown only acts on the socket behind fd, which was just checked to
            // be this connection's (on the thread that would close it).
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_RDWR);
            }
        }
    }

    /// Whether what was written can be left to the kernel: nothing waits to be sent, and, if
    /// the peer sent bytes not yet read, everything sent was acknowledged too (closing a socket
    /// with unread bytes answers with a reset, which may destroy data still in flight; with
    /// none, the kernel delivers the rest and then its FIN).
    pub fn is_flushed(&self) -> bool {
        let unsent = self.ioctl_count(libc::SIOCOUTQNSD as libc::c_ulong);
        if unsent != Some(0) {
            return unsent.is_none();
        }
        match self.ioctl_count(libc::FIONREAD as libc::c_ulong) {
            Some(0) | None => true,
            Some(_) => self.queued_bytes().is_none_or(|queued| queued == 0),
        }
    }

    /// An ioctl that reports one count on this socket (bytes unread, unsent, …); `None` when
    /// the socket is gone.
    fn ioctl_count(&self, request: libc::c_ulong) -> Option<usize> {
        let mut count: libc::c_int = 0;
        // SAFETY: the counting ioctls write one int.
        let asked = unsafe { libc::ioctl(self.fd, request as _, &mut count) };
        (asked == 0).then_some(count.max(0) as usize)
    }

    /// Whether the connection is still established (not shut down by either side).
    fn is_established(&self) -> bool {
        // The kernel's TCP_ESTABLISHED.
        const TCP_ESTABLISHED: u8 = 1;
        self.tcp_info()
            .is_some_and(|info| info.tcpi_state == TCP_ESTABLISHED)
    }

    /// The kernel's view of the connection (state, bytes acknowledged, …).
    fn tcp_info(&self) -> Option<libc::tcp_info> {
        // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large.
        let read = unsafe {
            libc::getsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        (read == 0).then_some(info)
    }

    /// Bytes in the socket's send queue: sent and not yet acknowledged, or not yet sent.
    pub fn queued_bytes(&self) -> Option<usize> {
        self.ioctl_count(libc::TIOCOUTQ as libc::c_ulong)
    }

    /// Whether earlier responses lie unread: more than `UNREAD_RESPONSES_MAX_BYTES` queued, or
    /// a small send buffer half full.
    fn has_unread_backlog(&self) -> bool {
        let Some(queued) = self.queued_bytes() else {
            return false;
        };
        let mut buffer: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes one int (the send buffer's size) into `buffer`.
        let asked = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&mut buffer as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        let half_full = asked == 0 && queued > 0 && queued >= (buffer.max(0) as usize) / 2;
        queued > UNREAD_RESPONSES_MAX_BYTES || half_full
    }

    /// Bytes the peer has acknowledged so far, and whether bytes wait to be sent or acked.
    fn progress(&self) -> Option<(u64, bool)> {
        let info = self.tcp_info()?;
        let waiting = self.queued_bytes().is_some_and(|queued| queued > 0);
        Some((info.tcpi_bytes_acked, waiting))
    }
}

/// A client that sends a request while this much of its earlier responses is still in the
/// socket (or while the socket's send buffer is half full, when it is small) is pipelining
/// without reading: actix-http would answer every such request into a buffer that grows
/// without bound. No browser does this (they read each response before sending the next
/// request on a connection, so the queue is about empty then), so it is a fixed guard rather
/// than a setting.
const UNREAD_RESPONSES_MAX_BYTES: usize = 64 << 10;

/// Middleware: ends a connection whose client sends another request while the responses it
/// was already sent lie unread, and counts it.
pub async fn refuse_unread_pipelines(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let backlogged = req
        .conn_data::<SocketId>()
        .copied()
        .filter(|socket| socket.is_current() && socket.has_unread_backlog());
    if let Some(socket) = backlogged {
        // Requests already buffered on a connection that was cut still pass here once each;
        // the connection is counted once, while it is still established.
        if socket.is_established() {
            metrics::counter!(
                "ephemera_refusals_total",
                "reason" => Refusal::UnreadResponses.label()
            )
            .increment(1);
        }
        socket.cut();
        let response =
            HttpResponse::ServiceUnavailable().body("read the responses you asked for\n");
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Middleware: refuses a request whose body is chunked (`Transfer-Encoding`) and ends its
/// connection. No route here takes a chunked body (browsers send a length), and actix-http
/// would go on reading one that never ends after the answer, holding the connection for good.
pub async fn refuse_chunked_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req
        .headers()
        .contains_key(actix_web::http::header::TRANSFER_ENCODING)
    {
        metrics::counter!(
            "ephemera_refusals_total",
            "reason" => Refusal::ChunkedBody.label()
        )
        .increment(1);
        if let Some(socket) = req.conn_data::<SocketId>().copied() {
            // Cut once the answer has left (or after a second), so the client reads why.
            actix_web::rt::spawn(async move {
                for _ in 0..100 {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    if socket.is_flushed() {
                        break;
                    }
                }
                socket.cut();
            });
        }
        let response = HttpResponse::LengthRequired()
            .insert_header((actix_web::http::header::CONNECTION, "close"))
            .body("send a Content-Length, not a chunked body\n");
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn inode_of(fd: RawFd) -> Option<u64> {
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `stat`; an invalid fd is an error, not undefined behaviour.
    let found = unsafe { libc::fstat(fd, &mut stat) } == 0;
    (found && (stat.st_mode & libc::S_IFMT) == libc::S_IFSOCK).then_some(stat.st_ino)
}

struct Watched {
    socket: SocketId,
    acked: u64,
    /// Since when bytes have waited with nothing acknowledged.
    stalled_since: Option<Instant>,
}

thread_local! {
    /// The sockets of this worker thread's connections, and whether its sweep runs.
    static WATCHED: RefCell<(Vec<Watched>, bool)> = const { RefCell::new((Vec::new(), false)) };
}

/// Watches a new connection's socket on this worker thread. Called from `on_connect`.
pub fn watch(socket: SocketId, stall_timeout: Duration, on_stall: fn()) {
    let start_sweep = WATCHED.with(|watched| {
        let mut watched = watched.borrow_mut();
        watched.0.push(Watched {
            socket,
            acked: 0,
            stalled_since: None,
        });
        !std::mem::replace(&mut watched.1, true)
    });
    if start_sweep && !stall_timeout.is_zero() {
        actix_web::rt::spawn(sweep(stall_timeout, on_stall));
    }
}

/// Every quarter of the timeout: forgets closed sockets and cuts stalled ones.
async fn sweep(stall_timeout: Duration, on_stall: fn()) {
    let mut ticks = tokio::time::interval((stall_timeout / 4).max(Duration::from_millis(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        WATCHED.with(|watched| {
            watched.borrow_mut().0.retain_mut(|entry| {
                if !entry.socket.is_current() {
                    return false;
                }
                let Some((acked, waiting)) = entry.socket.progress() else {
                    return false;
                };
                if !waiting || acked != entry.acked {
                    entry.acked = acked;
                    entry.stalled_since = None;
                    return true;
                }
                let since = *entry.stalled_since.get_or_insert(now);
                if now.duration_since(since) < stall_timeout {
                    return true;
                }
                on_stall();
                entry.socket.cut();
                false
            });
        });
    }
}
