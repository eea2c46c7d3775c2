//! Batched UDP I/O: `recvmmsg`/`sendmmsg`, one syscall for up to [`BATCH`] datagrams.
//!
//! The kernel send path, not crypto, dominates an SFU's cost per packet (AES-GCM is
//! ~0.4 µs per packet; a `sendto` is several µs), and fan-out means each incoming packet
//! becomes N outgoing ones to N different addresses. Batching those into `sendmmsg`
//! calls is the largest single saving available. UDP GSO only helps when many segments
//! go to the *same* destination, which fan-out rarely produces, so it is not used here
//! (see ARCHITECTURE.md).
//!
//! Why hand-written: `quinn-udp` (the well-kept option) batches receives but sends one
//! destination per `sendmsg` (with GSO), which is the opposite of what fan-out needs;
//! `nix` wraps `sendmmsg` but allocates per call. The unsafe code is confined here and
//! only builds kernel structures pointing at buffers that outlive the call.
#![allow(unsafe_code)]

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per syscall.
pub const BATCH: usize = 32;
/// Receive buffer per datagram (larger than any MTU we see; bigger datagrams are truncated
/// and then rejected by the parsers).
pub const RECV_BUF: usize = 2048;

/// Reusable receive state: buffers, addresses and kernel headers for one batch.
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF]>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside only ever point into the struct's own vectors and are
// rebuilt before every use; moving the struct to another thread is sound.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let (addr, iov, msg) = unsafe { (zeroed(), zeroed(), zeroed()) };
        RecvBatch {
            bufs: vec![[0u8; RECV_BUF]; BATCH],
            addrs: vec![addr; BATCH],
            iovecs: vec![iov; BATCH],
            msgs: vec![msg; BATCH],
        }
    }
}

impl RecvBatch {
    /// Receive up to [`BATCH`] datagrams from non-blocking `fd`. Returns how many; an
    /// error `WouldBlock` when none is waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that live through the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The `i`-th received datagram (after `recv` returned more than `i`).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let len = (self.msgs[i].msg_len as usize).min(RECV_BUF);
        let addr = sockaddr_to_std(&self.addrs[i])?;
        Some((addr, &self.bufs[i][..len]))
    }
}

/// Reusable send state.
#[derive(Default)]
pub struct SendBatch {
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch, the pointers are rebuilt before each use.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Send `items` (destination, bytes) from `fd` with as few `sendmmsg` calls as
    /// possible. Returns how many were handed to the kernel; the rest were refused
    /// because the socket buffer is full (`WouldBlock`) or by an error, which is returned
    /// alongside so the caller can count drops. UDP is lossy anyway: a full buffer means
    /// drop, not queue.
    pub fn send(&mut self, fd: RawFd, items: &[(SocketAddr, &[u8])]) -> (usize, Option<io::Error>) {
        // `pos`: items dealt with (handed over or failed); `handed`: taken by the kernel.
        let mut pos = 0;
        let mut handed = 0;
        let mut failed: Option<io::Error> = None;
        while pos < items.len() {
            let chunk = &items[pos..(pos + BATCH).min(items.len())];
            self.addrs.clear();
            self.iovecs.clear();
            self.msgs.clear();
            for (dst, data) in chunk {
                self.addrs.push(std_to_sockaddr(dst));
                self.iovecs.push(libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                });
            }
            for i in 0..chunk.len() {
                // SAFETY: zeroed mmsghdr is valid; pointers set below.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_name = (&mut self.addrs[i].0 as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = self.addrs[i].1;
                m.msg_hdr.msg_iov = &mut self.iovecs[i];
                m.msg_hdr.msg_iovlen = 1;
                self.msgs.push(m);
            }
            // SAFETY: headers point into `self` and into `items`, both alive for the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    chunk.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    return (handed, Some(e));
                }
                // A per-destination error (e.g. EHOSTUNREACH, EINVAL for a bad address)
                // fails the first message: skip it (not sent: the caller counts it as
                // dropped) and carry on with the rest.
                pos += 1;
                failed = Some(e);
                continue;
            }
            pos += n as usize;
            handed += n as usize;
            if n == 0 {
                return (handed, failed);
            }
        }
        (handed, failed)
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn std_to_sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { ss.as_mut_ptr().cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above for sockaddr_in6.
            unsafe { ss.as_mut_ptr().cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: zero-initialised, then one variant written.
    (unsafe { ss.assume_init() }, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let dst = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100 + i as usize]).collect();
        let items: Vec<(SocketAddr, &[u8])> =
            payloads.iter().map(|p| (dst, p.as_slice())).collect();
        let (sent, err) = SendBatch::default().send(a.as_raw_fd(), &items);
        assert_eq!((sent, err.map(|e| e.kind())), (50, None));
        let mut rb = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 50 && std::time::Instant::now() < deadline {
            match rb.recv(b.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (from, data) = rb.get(i).unwrap();
                        assert_eq!(from, a.local_addr().unwrap());
                        got.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads);
    }

    #[test]
    fn a_refused_destination_is_not_counted_as_sent() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = b.local_addr().unwrap();
        // An IPv6 destination from an IPv4 socket: the kernel refuses that one message.
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let items: Vec<(SocketAddr, &[u8])> = vec![(dst, b"one"), (bad, b"two"), (dst, b"three")];
        let (sent, err) = SendBatch::default().send(a.as_raw_fd(), &items);
        assert_eq!(sent, 2, "the refused datagram is a drop, not a send");
        assert!(err.is_some(), "the refusal is reported");
        let mut buf = [0u8; 16];
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"three");
    }
}
