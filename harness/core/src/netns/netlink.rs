//! The rtnetlink requests that set up a private network's loopback device:
//! built as bytes before the helper forks, so the helper only sends them.

use std::net::Ipv4Addr;

use super::Block;

const NLMSG_HDRLEN: usize = 16;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// A new network namespace's loopback device always has index 1.
const LOOPBACK_INDEX: i32 = 1;

/// Loopback up, then one address per block, each asking for an ACK.
pub(super) fn setup(blocks: &[Block]) -> Vec<Vec<u8>> {
    let mut out = vec![link_up(1)];
    for (i, b) in blocks.iter().enumerate() {
        out.push(add_address(2 + i as u32, b.addr, b.len));
    }
    out
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched last
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = buf.len() as u32;
    buf[..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

fn link_up(seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + 16);
    header(&mut buf, RTM_NEWLINK, 0, seq);
    // struct ifinfomsg
    buf.push(libc::AF_UNSPEC as u8);
    buf.push(0);
    buf.extend_from_slice(&0u16.to_ne_bytes()); // type
    buf.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    let up = libc::IFF_UP as u32;
    buf.extend_from_slice(&up.to_ne_bytes()); // flags
    buf.extend_from_slice(&up.to_ne_bytes()); // change mask
    finish(buf)
}

fn add_address(seq: u32, addr: Ipv4Addr, len: u8) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + 8 + 16);
    header(&mut buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq);
    // struct ifaddrmsg
    buf.push(libc::AF_INET as u8);
    buf.push(len);
    buf.push(0); // flags
    buf.push(0); // scope: universe, as an address on a real interface
    buf.extend_from_slice(&(LOOPBACK_INDEX as u32).to_ne_bytes());
    for kind in [IFA_LOCAL, IFA_ADDRESS] {
        buf.extend_from_slice(&8u16.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&addr.octets());
    }
    finish(buf)
}

/// The error an ACK carries: 0 for success, else a positive errno; `None`
/// when `reply` is not an ACK.
pub(super) fn ack_error(reply: &[u8]) -> Option<i32> {
    const NLMSG_ERROR: u16 = 2;
    if reply.len() < NLMSG_HDRLEN + 4 {
        return None;
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != NLMSG_ERROR {
        return None;
    }
    let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    Some(-err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_length_and_the_loopback_index() {
        let msgs = setup(&[Block {
            addr: Ipv4Addr::new(10, 244, 0, 1),
            len: 16,
        }]);
        assert_eq!(msgs.len(), 2);
        for m in &msgs {
            let len = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize;
            assert_eq!(len, m.len());
        }
        // ifaddrmsg: family, prefix length, then the address twice.
        let addr = &msgs[1];
        assert_eq!(addr[16], libc::AF_INET as u8);
        assert_eq!(addr[17], 16);
        assert_eq!(&addr[addr.len() - 4..], &[10, 244, 0, 1]);
        assert_eq!(ack_error(&[0; 8]), None);
    }
}
