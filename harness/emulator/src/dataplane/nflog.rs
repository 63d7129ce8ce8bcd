//! NFLOG over netlink: the messages the data path's `log group` rules send,
//! read by a thread of zdt from a socket made in the cluster's namespace.
//! Only what the data path needs is parsed: the packet's mark (which
//! decision logged it), the prefix, and the TCP SYN's source and sequence
//! number (which connection it was).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_QTHRESH: u16 = 4;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_MARK: u16 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// How much of each packet the kernel copies: the IPv4 and TCP headers.
const COPY_RANGE: u32 = 64;

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logged {
    pub mark: u32,
    pub prefix: String,
    /// The TCP segment's source (the client's address).
    pub source: SocketAddr,
    /// Its sequence number (a retransmitted SYN repeats it).
    pub seq: u32,
}

/// Bind `socket` (a `NETLINK_NETFILTER` socket) to NFLOG `group`, copying
/// packet headers, one message per packet.
pub(crate) fn bind(socket: &OwnedFd, group: u16) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    // A deep receive buffer: a burst of new connections must not overrun
    // the reader. FORCE needs CAP_NET_ADMIN; the plain one is capped.
    let size: libc::c_int = 16 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads an int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
    }
    // SAFETY: sockaddr_nl is plain data; zero is "the kernel picks the port".
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: addr is a valid sockaddr_nl of the size given.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    config(fd, group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])?;
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    config(fd, group, NFULA_CFG_MODE, &mode)?;
    config(fd, group, NFULA_CFG_QTHRESH, &1u32.to_be_bytes())?;
    // A timeout for the reader, so it notices when it is asked to stop.
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: setsockopt reads a timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(())
}

/// One NFULNL_MSG_CONFIG request with one attribute, and its ACK.
fn config(fd: i32, group: u16, attr: u16, value: &[u8]) -> io::Result<()> {
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version, resource id (the group, big endian)
    msg.push(libc::AF_UNSPEC as u8);
    msg.push(0);
    msg.extend_from_slice(&group.to_be_bytes());
    let len = 4 + value.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&attr.to_ne_bytes());
    msg.extend_from_slice(value);
    while msg.len() % 4 != 0 {
        msg.push(0);
    }
    let total = msg.len() as u32;
    msg[..4].copy_from_slice(&total.to_ne_bytes());
    // SAFETY: msg is valid for its length.
    if unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 256];
    // SAFETY: reply is valid for its length.
    let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let reply = &reply[..n as usize];
    if reply.len() >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([reply[4], reply[5]]) == NLMSG_ERROR {
        let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
    }
    Ok(())
}

/// Receive one datagram into `buf` (which is reused); `Ok(0)` on the
/// reader's timeout.
pub(crate) fn recv(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                Ok(0)
            }
            _ => Err(e),
        };
    }
    Ok(n as usize)
}

/// The packets logged in one datagram (several netlink messages may share
/// it); anything that is not a logged IPv4 TCP segment is skipped.
pub(crate) fn parse(datagram: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
            if let Some(l) = packet(&rest[NLMSG_HDRLEN..len]) {
                out.push(l);
            }
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    out
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One NFULNL_MSG_PACKET body: nfgenmsg, then attributes.
fn packet(body: &[u8]) -> Option<Logged> {
    let mut attrs = body.get(4..)?;
    let (mut mark, mut prefix, mut payload) = (0u32, String::new(), None);
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            NFULA_MARK if value.len() >= 4 => {
                mark = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
            }
            NFULA_PREFIX => {
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                prefix = String::from_utf8_lossy(&value[..end]).into_owned();
            }
            NFULA_PAYLOAD => payload = Some(value),
            _ => {}
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    let ip = payload?;
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != libc::IPPROTO_TCP as u8 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tcp = ip.get(ihl..ihl + 8)?;
    let source = SocketAddrV4::new(
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        u16::from_be_bytes([tcp[0], tcp[1]]),
    );
    Some(Logged {
        mark,
        prefix,
        source: SocketAddr::V4(source),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn a_logged_syn_gives_its_mark_prefix_source_and_sequence() {
        let mut ip = vec![0u8; 20 + 20];
        ip[0] = 0x45;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[100, 64, 0, 7]);
        ip[20..22].copy_from_slice(&40_001u16.to_be_bytes());
        ip[24..28].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let mut body = vec![libc::AF_INET as u8, 0, 0, 1];
        body.extend(attr(NFULA_MARK, &70_000u32.to_be_bytes()));
        body.extend(attr(NFULA_PREFIX, b"g\0"));
        body.extend(attr(NFULA_PAYLOAD, &ip));
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend(body);
        let twice = [msg.clone(), msg].concat();
        let got = parse(&twice);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Logged {
                mark: 70_000,
                prefix: "g".into(),
                source: "100.64.0.7:40001".parse().unwrap(),
                seq: 0xdead_beef,
            }
        );
        assert!(parse(&[0u8; 8]).is_empty());
    }
}
