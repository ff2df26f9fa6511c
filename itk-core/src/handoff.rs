//! Handing a connection from the process that accepted it to a user's
//! persistent process (UserPools), with no httpd involved:
//!
//! * [`peek`]: read a connection's first bytes without consuming them
//!   (`MSG_PEEK`), waiting for more with `SO_RCVLOWAT` + `poll` until a
//!   deadline;
//! * [`Channel`]: a one-way `SOCK_SEQPACKET` socket pair; one message
//!   carries one descriptor (`SCM_RIGHTS`);
//! * [`check_connection`]: what a receiver verifies of a descriptor before
//!   it serves it;
//! * [`SharedWords`]: a small table of words in anonymous shared memory.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Instant;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `setsockopt(fd, SOL_SOCKET, opt, &v)` for a plain value type.
fn set_sockopt<T: Copy>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: a pointer to a live value and its size; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn set_rcvlowat(fd: RawFd, n: usize) -> io::Result<()> {
    let v: libc::c_int = n.min(libc::c_int::MAX as usize) as libc::c_int;
    set_sockopt(fd, libc::SO_RCVLOWAT, &v)
}

/// What [`peek`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Peeked {
    /// This many bytes are in `buf` (more than before).
    More(usize),
    /// The deadline passed with no more bytes.
    Timeout,
    /// The peer closed (or reset) the connection, or shut its sending side
    /// down: no more bytes will come.
    Closed,
}

/// Peeks at the connected stream socket `fd` into `buf` once more than
/// `have` bytes are available, or the deadline passes. Nothing is
/// consumed: whoever serves the connection reads the same bytes. Leaves
/// `SO_RCVLOWAT` at 1 (the default) in every case.
pub fn peek(fd: RawFd, buf: &mut [u8], have: usize, deadline: Instant) -> io::Result<Peeked> {
    if have >= buf.len() {
        return Ok(Peeked::More(have));
    }
    let mut raised = false;
    let r = peek_wait(fd, buf, have, deadline, &mut raised);
    // A raised low-water mark would make the server's own reads and polls
    // wait for more bytes than a request may have.
    if raised {
        set_rcvlowat(fd, 1)?;
    }
    r
}

fn peek_wait(
    fd: RawFd,
    buf: &mut [u8],
    have: usize,
    deadline: Instant,
    raised: &mut bool,
) -> io::Result<Peeked> {
    let mut stalled = false;
    loop {
        // SAFETY: recv into a live buffer of the given length.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return Ok(Peeked::Closed);
        }
        if n > 0 && n as usize > have {
            return Ok(Peeked::More(n as usize));
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                Some(libc::ECONNRESET) => return Ok(Peeked::Closed),
                _ => return Err(e),
            }
        }
        // Wait until more than we have is there: poll is level-triggered,
        // and the bytes we peeked stay readable.
        let now = Instant::now();
        if now >= deadline {
            return Ok(Peeked::Timeout);
        }
        *raised = true;
        set_rcvlowat(fd, have.max(n.max(0) as usize) + 1)?;
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(io::Error::last_os_error());
        }
        if rc == 0 {
            return Ok(Peeked::Timeout);
        }
        // The peer will send nothing more (it shut its side down, or the
        // connection failed): what is there is all there will be. Polling
        // again would return at once, whatever the low-water mark.
        if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) != 0 {
            return Ok(Peeked::Closed);
        }
        if rc > 0 && stalled {
            // readable twice with nothing new (the low-water mark is capped
            // at half the receive buffer): stop rather than spin
            return Ok(Peeked::Timeout);
        }
        stalled = rc > 0;
    }
}

/// A one-way channel of connections: the sending end stays with the
/// processes that route, the receiving end goes to the user's processes.
pub struct Channel {
    pub send: OwnedFd,
    pub recv: OwnedFd,
}

impl Channel {
    /// A `SOCK_SEQPACKET` pair (close-on-exec): message boundaries keep one
    /// descriptor per message, and many readers may share the receiving end.
    pub fn new() -> io::Result<Channel> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: socketpair fills a live array of two descriptors.
        cvt(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        })?;
        // SAFETY: two fresh descriptors nobody else owns.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // One-way: the receiving end cannot talk back to the senders.
        // SAFETY: shutdown on our own descriptors.
        unsafe {
            libc::shutdown(a.as_raw_fd(), libc::SHUT_RD);
            libc::shutdown(b.as_raw_fd(), libc::SHUT_WR);
        }
        Ok(Channel { send: a, recv: b })
    }
}

/// Sends `fd` as one message on the sending end `chan`, without blocking:
/// an error (EAGAIN: the queue is full) means the caller keeps the
/// connection.
pub fn send_fd(chan: RawFd, fd: RawFd) -> io::Result<()> {
    let mut m = FdMsg::new();
    let msg = m.header();
    // SAFETY: `msg` points into `m`, alive for the call; the control part
    // has room for exactly one SCM_RIGHTS header with one descriptor
    // (CMSG_FIRSTHDR of a buffer of CMSG_SPACE(one fd) is never NULL).
    let rc = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        libc::sendmsg(chan, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The buffers of a one-byte message that carries one descriptor.
struct FdMsg {
    byte: [u8; 1],
    iov: libc::iovec,
    /// Control part: CMSG_SPACE(one fd), 8-byte aligned.
    cbuf: Vec<u64>,
    space: usize,
}

impl FdMsg {
    fn new() -> Box<FdMsg> {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
        let mut m = Box::new(FdMsg {
            byte: [0],
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 1,
            },
            cbuf: vec![0u64; space.div_ceil(8)],
            space,
        });
        // (boxed: the iovec points at the byte, which must not move)
        m.iov.iov_base = m.byte.as_mut_ptr() as *mut libc::c_void;
        m
    }

    /// A msghdr over these buffers (valid while `self` is).
    fn header(&mut self) -> libc::msghdr {
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut self.iov;
        msg.msg_iovlen = 1;
        msg.msg_control = self.cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = self.space as _;
        msg
    }
}

/// What [`recv_fd`] got.
#[derive(Debug)]
pub enum Received {
    Fd(OwnedFd),
    /// Nothing within the timeout.
    Timeout,
    /// A signal arrived.
    Interrupted,
    /// Another process sharing the receiving end took the message that
    /// woke this one.
    Taken,
    /// A message without a descriptor, or with a truncated control part
    /// (any descriptor in it was closed).
    Junk,
    /// Every sending end is closed: nothing will ever come.
    Closed,
}

/// How many descriptor messages wait on the receiving end `chan`: the
/// bytes queued (`SIOCINQ` sums a `SOCK_SEQPACKET` queue), one per
/// [`send_fd`] message.
pub fn queued(chan: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCINQ writes one int into a live local.
    cvt(unsafe { libc::ioctl(chan, libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// Waits up to `timeout_ms` (-1: forever) for one descriptor on the
/// receiving end `chan`; it arrives close-on-exec. (`poll` wakes every
/// process waiting on the same end; processes that share one wait with
/// [`recv_fd_blocking`].)
pub fn recv_fd(chan: RawFd, timeout_ms: i32) -> io::Result<Received> {
    let mut p = libc::pollfd {
        fd: chan,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(Received::Interrupted)
        } else {
            Err(e)
        };
    }
    if rc == 0 {
        return Ok(Received::Timeout);
    }
    recv_msg(chan, libc::MSG_DONTWAIT, Received::Taken)
}

/// Sets how long [`recv_fd_blocking`] waits on the receiving end `chan`
/// (for every process sharing it).
pub fn set_recv_timeout(chan: RawFd, secs: u64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: secs.min(i32::MAX as u64) as libc::time_t,
        tv_usec: 0,
    };
    set_sockopt(chan, libc::SO_RCVTIMEO, &tv)
}

/// Waits for one descriptor on `chan` in a blocking `recvmsg`, up to the
/// socket's receive timeout ([`set_recv_timeout`]). The kernel wakes one
/// waiter per message (an exclusive wait), not every process that shares
/// the end, as `poll` would. A signal interrupts it.
pub fn recv_fd_blocking(chan: RawFd) -> io::Result<Received> {
    recv_msg(chan, 0, Received::Timeout)
}

/// One `recvmsg` of a descriptor; `on_again` is what EAGAIN means.
fn recv_msg(chan: RawFd, flags: libc::c_int, on_again: Received) -> io::Result<Received> {
    let mut m = FdMsg::new();
    let mut msg = m.header();
    // SAFETY: `msg` points into `m`, alive for the call; the kernel writes
    // at most the given lengths.
    let n = unsafe { libc::recvmsg(chan, &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR) => Ok(Received::Interrupted),
            // (polled: another reader took it; blocking: the timeout)
            Some(libc::EAGAIN) => Ok(on_again),
            _ => Err(e),
        };
    }
    if n == 0 && msg.msg_controllen == 0 {
        return Ok(Received::Closed);
    }
    // Every descriptor that arrived, owned at once so none leaks.
    let mut fds = Vec::new();
    // SAFETY: walks the control messages the kernel wrote into `cbuf`
    // (msg_controllen bytes), reading only SCM_RIGHTS payloads within each
    // header's length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() != 1 {
        return Ok(Received::Junk);
    }
    Ok(Received::Fd(fds.pop().expect("one descriptor")))
}

fn sockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its size.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(v)
}

/// What `getsockname` or `getpeername` (`call`, one of those two and
/// nothing else) says of `fd`.
fn sock_addr(
    fd: RawFd,
    call: unsafe extern "C" fn(
        libc::c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> libc::c_int,
) -> io::Result<libc::sockaddr_storage> {
    // SAFETY: a zeroed sockaddr_storage is valid; `call` is getsockname or
    // getpeername (the only callers pass those), which write at most `len`
    // bytes into it.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        cvt(call(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len))?;
        Ok(ss)
    }
}

/// The port of an IPv4 or IPv6 address, and whether it is IPv6.
fn port_of(ss: &libc::sockaddr_storage) -> io::Result<(u16, bool)> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Ok((u16::from_be(sin.sin_port), false))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Ok((u16::from_be(sin6.sin6_port), true))
        }
        f => Err(io::Error::other(format!("address family {f}"))),
    }
}

/// The two addresses of a connection that [`check_connection`] accepted,
/// as `getsockname` and `getpeername` gave them: the receiver serves the
/// connection with them and asks the kernel no more.
#[derive(Clone, Copy)]
pub struct ConnAddrs {
    pub local: libc::sockaddr_storage,
    pub remote: libc::sockaddr_storage,
}

impl std::fmt::Debug for ConnAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let port = |ss| port_of(ss).map_or(0, |(p, _)| p);
        write!(
            f,
            "ConnAddrs(local port {}, remote port {})",
            port(&self.local),
            port(&self.remote)
        )
    }
}

/// Why a receiver does not serve a descriptor.
#[derive(Debug)]
pub enum Refused {
    /// Not an accepted TCP connection on one of the server's ports: no
    /// worker sends that (a compromised sender, or a bug).
    Foreign(String),
    /// The client went away before the receiver took the connection.
    Gone(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Foreign(why) => f.write_str(why),
            Refused::Gone(e) => write!(f, "the connection is gone: {e}"),
        }
    }
}

/// What a user process checks of a descriptor before it serves it: an
/// accepted (connected, not listening) TCP stream of IPv4 or IPv6 whose
/// local port is one the server listens on. Anything else is refused (a
/// compromised sender could pass a Unix socket or a connection of its
/// own). Three system calls, whose answers the receiver then serves the
/// connection with.
pub fn check_connection(fd: RawFd, ports: &[u16]) -> Result<ConnAddrs, Refused> {
    let foreign = Refused::Foreign;
    // (getsockname below refuses anything but IPv4 and IPv6)
    let ty = sockopt_int(fd, libc::SO_TYPE).map_err(|e| foreign(format!("SO_TYPE: {e}")))?;
    if ty != libc::SOCK_STREAM {
        return Err(foreign(format!("not a stream socket (type {ty})")));
    }
    let local =
        sock_addr(fd, libc::getsockname).map_err(|e| foreign(format!("getsockname: {e}")))?;
    let (port, _) = port_of(&local).map_err(|e| foreign(format!("not an IP socket: {e}")))?;
    if !ports.contains(&port) {
        return Err(foreign(format!(
            "local port {port} is not one the server listens on"
        )));
    }
    // A listening socket has no peer; nor has a connection the client
    // reset meanwhile.
    let remote = match sock_addr(fd, libc::getpeername) {
        Ok(r) => r,
        Err(e) => {
            return Err(match sockopt_int(fd, libc::SO_ACCEPTCONN) {
                Ok(0) => Refused::Gone(e),
                _ => foreign("a listening socket".into()),
            });
        }
    };
    Ok(ConnAddrs { local, remote })
}

/// A table of `u32` words in anonymous shared memory: processes forked
/// after it was made share it; dropping it unmaps this process's view.
pub struct SharedWords {
    ptr: *mut AtomicU32,
    len: usize,
}

// SAFETY: the words are atomics; the mapping lives until drop.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    pub fn new(len: usize) -> io::Result<SharedWords> {
        let len = len.max(1);
        // SAFETY: a fresh anonymous mapping; no memory of ours changes.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 4,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedWords {
            ptr: p as *mut AtomicU32,
            len,
        })
    }

    pub fn words(&self) -> &[AtomicU32] {
        // SAFETY: `len` zero-initialised (valid) atomics, mapped while self
        // lives; the borrow ends before drop can unmap them.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no borrow of it outlives self.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len * 4) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn pair() -> (TcpStream, TcpStream, TcpListener) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s, l)
    }

    #[test]
    fn peeking_consumes_nothing_and_waits_for_more() {
        let (mut c, s, _l) = pair();
        let mut buf = [0u8; 64];
        let soon = || Instant::now() + Duration::from_millis(200);
        assert_eq!(
            peek(s.as_raw_fd(), &mut buf, 0, soon()).unwrap(),
            Peeked::Timeout
        );
        c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert_eq!(
            peek(s.as_raw_fd(), &mut buf, 0, soon()).unwrap(),
            Peeked::More(16)
        );
        // nothing new: a timeout, not a spin and not the same bytes again
        assert_eq!(
            peek(s.as_raw_fd(), &mut buf, 16, soon()).unwrap(),
            Peeked::Timeout
        );
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c.write_all(b"Host: a\r\n\r\n").unwrap();
            c
        });
        let got = peek(
            s.as_raw_fd(),
            &mut buf,
            16,
            Instant::now() + Duration::from_secs(5),
        );
        assert_eq!(got.unwrap(), Peeked::More(27));
        assert_eq!(&buf[..27], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // the low-water mark is back to 1 and every byte is still there
        assert_eq!(sockopt_int(s.as_raw_fd(), libc::SO_RCVLOWAT).unwrap(), 1);
        let mut all = [0u8; 64];
        let n = std::io::Read::read(&mut &s, &mut all).unwrap();
        assert_eq!(&all[..n], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        drop(writer.join().unwrap());
        assert_eq!(
            peek(s.as_raw_fd(), &mut buf, 0, soon()).unwrap(),
            Peeked::Closed
        );
    }

    #[test]
    fn a_half_closed_client_does_not_make_the_peek_spin() {
        let (mut c, s, _l) = pair();
        c.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = [0u8; 64];
        let t = Instant::now();
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            peek(s.as_raw_fd(), &mut buf, 0, soon).unwrap(),
            Peeked::More(18)
        );
        assert_eq!(
            peek(s.as_raw_fd(), &mut buf, 18, soon).unwrap(),
            Peeked::Closed
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn a_channel_without_senders_says_so() {
        let ch = Channel::new().unwrap();
        let Channel { send, recv } = ch;
        drop(send);
        assert!(matches!(
            recv_fd(recv.as_raw_fd(), 1000).unwrap(),
            Received::Closed
        ));
        assert!(matches!(
            recv_fd_blocking(recv.as_raw_fd()).unwrap(),
            Received::Closed
        ));
    }

    #[test]
    fn a_full_buffer_is_not_peeked_again() {
        let (_c, s, _l) = pair();
        let mut buf = [0u8; 4];
        assert_eq!(
            peek(s.as_raw_fd(), &mut buf, 4, Instant::now()).unwrap(),
            Peeked::More(4)
        );
    }

    #[test]
    fn a_connection_crosses_the_channel() {
        let ch = Channel::new().unwrap();
        let (mut c, s, l) = pair();
        let port = l.local_addr().unwrap().port();
        assert!(matches!(
            recv_fd(ch.recv.as_raw_fd(), 0).unwrap(),
            Received::Timeout
        ));
        send_fd(ch.send.as_raw_fd(), s.as_raw_fd()).unwrap();
        drop(s);
        let Received::Fd(fd) = recv_fd(ch.recv.as_raw_fd(), 1000).unwrap() else {
            panic!("no descriptor")
        };
        check_connection(fd.as_raw_fd(), &[port]).unwrap();
        assert!(check_connection(fd.as_raw_fd(), &[port + 1]).is_err());
        // SAFETY: (test) close-on-exec set by MSG_CMSG_CLOEXEC
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(fl & libc::FD_CLOEXEC, 0);
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        let served = TcpStream::from(fd);
        std::io::Read::read_exact(&mut &served, &mut b).unwrap();
        assert_eq!(&b, b"x");
    }

    #[test]
    fn the_receiver_refuses_what_is_no_accepted_tcp_connection() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(
            check_connection(l.as_raw_fd(), &[port])
                .unwrap_err()
                .to_string()
                .contains("listening")
        );
        let ch = Channel::new().unwrap();
        assert!(
            check_connection(ch.recv.as_raw_fd(), &[port])
                .unwrap_err()
                .to_string()
                .contains("stream")
        );
        let (us, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(
            check_connection(us.as_raw_fd(), &[port])
                .unwrap_err()
                .to_string()
                .contains("not an IP socket")
        );
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let up = u.local_addr().unwrap().port();
        assert!(
            check_connection(u.as_raw_fd(), &[up])
                .unwrap_err()
                .to_string()
                .contains("stream")
        );
    }

    #[test]
    fn a_connection_the_client_reset_is_gone_not_foreign() {
        let (c, s, l) = pair();
        let port = l.local_addr().unwrap().port();
        let addrs = check_connection(s.as_raw_fd(), &[port]).unwrap();
        assert_eq!(port_of(&addrs.local).unwrap().0, port);
        assert_eq!(
            port_of(&addrs.remote).unwrap().0,
            c.local_addr().unwrap().port()
        );
        // SO_LINGER 0: close sends a reset
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        set_sockopt(c.as_raw_fd(), libc::SO_LINGER, &linger).unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(
            check_connection(s.as_raw_fd(), &[port]),
            Err(Refused::Gone(_))
        ));
    }

    #[test]
    fn a_blocking_receive_times_out_and_gets_a_descriptor() {
        let ch = Channel::new().unwrap();
        set_recv_timeout(ch.recv.as_raw_fd(), 1).unwrap();
        let t = Instant::now();
        assert!(matches!(
            recv_fd_blocking(ch.recv.as_raw_fd()).unwrap(),
            Received::Timeout
        ));
        assert!(t.elapsed() >= Duration::from_millis(900));
        let (_c, s, _l) = pair();
        send_fd(ch.send.as_raw_fd(), s.as_raw_fd()).unwrap();
        assert!(matches!(
            recv_fd_blocking(ch.recv.as_raw_fd()).unwrap(),
            Received::Fd(_)
        ));
    }

    #[test]
    fn the_channel_is_one_way() {
        let ch = Channel::new().unwrap();
        // the receiving end cannot send back
        let (_c, s, _l) = pair();
        assert!(send_fd(ch.recv.as_raw_fd(), s.as_raw_fd()).is_err());
    }

    #[test]
    fn shared_words_are_shared_with_children() {
        let w = SharedWords::new(4).unwrap();
        assert_eq!(w.words().len(), 4);
        // SAFETY: (test) fork in a test thread; the child only stores an
        // atomic and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            w.words()[2].store(42, Ordering::SeqCst);
            // SAFETY: _exit in the child.
            unsafe { libc::_exit(0) };
        }
        let mut st = 0;
        // SAFETY: (test) waits for our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert_eq!(w.words()[2].load(Ordering::SeqCst), 42);
    }
}
