//! The netlink wire format: `nlmsghdr` framing and `rtattr`/`nlattr` attributes.
//! Host byte order, 4-byte alignment (NLMSG_ALIGN / RTA_ALIGN).

pub const NLMSG_HDRLEN: usize = 16;

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(crate) fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
pub(crate) fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
pub(crate) fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
pub(crate) fn read_be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One netlink message: header fields and the payload after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    pub payload: &'a [u8],
}

/// Iterate the messages of one received datagram. A malformed length ends the iteration
/// with an error (and nothing after it is trusted).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, String>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= buf.len() {
            return None;
        }
        let rest = &buf[at..];
        if rest.len() < NLMSG_HDRLEN {
            failed = true;
            return Some(Err(format!("{} trailing bytes, shorter than a header", rest.len())));
        }
        let len = read_u32(rest, 0).unwrap_or(0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            failed = true;
            return Some(Err(format!("message length {len} with {} bytes left", rest.len())));
        }
        let msg = Message {
            ty: read_u16(rest, 4).unwrap_or(0),
            flags: read_u16(rest, 6).unwrap_or(0),
            seq: read_u32(rest, 8).unwrap_or(0),
            pid: read_u32(rest, 12).unwrap_or(0),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        at += align4(len);
        Some(Ok(msg))
    })
}

/// One attribute: type (without the NLA_F_NESTED / NLA_F_NET_BYTEORDER bits) and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub ty: u16,
    pub value: &'a [u8],
}

impl Attr<'_> {
    pub fn u8(&self) -> Option<u8> {
        self.value.first().copied()
    }
    pub fn u32(&self) -> Option<u32> {
        read_u32(self.value, 0)
    }
    /// A NUL-terminated string attribute (IFLA_IFNAME, IFA_LABEL).
    pub fn string(&self) -> String {
        let end = self.value.iter().position(|&b| b == 0).unwrap_or(self.value.len());
        String::from_utf8_lossy(&self.value[..end]).into_owned()
    }
}

/// Iterate the attributes in `buf`; stops at the first malformed one.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = Attr<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(at..)?;
        let len = read_u16(rest, 0)? as usize;
        let ty = read_u16(rest, 2)? & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        at += align4(len);
        Some(Attr { ty, value: &rest[4..len] })
    })
}

/// Encode one request message.
pub fn encode(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + payload.len();
    let mut out = Vec::with_capacity(align4(len));
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.extend_from_slice(payload);
    out.resize(align4(len), 0);
    out
}

/// Append one attribute (padded) to `out`.
pub(crate) fn push_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align4(out.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse() {
        let b = encode(20, 0x301, 7, &[1, 2, 3, 4, 5]);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..4], &21u32.to_ne_bytes());
        let m: Vec<_> = messages(&b).collect();
        assert_eq!(m.len(), 1);
        let m = m[0].clone().unwrap();
        assert_eq!((m.ty, m.flags, m.seq), (20, 0x301, 7));
        assert_eq!(m.payload, &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn two_messages_and_bad_length() {
        let mut b = encode(3, 2, 1, &0i32.to_ne_bytes());
        b.extend(encode(16, 2, 1, &[9; 6]));
        let m: Vec<_> = messages(&b).map(Result::unwrap).collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].payload.len(), 6);
        // length field larger than the datagram
        let mut bad = encode(16, 0, 1, &[0; 4]);
        bad[0] = 200;
        let r: Vec<_> = messages(&bad).collect();
        assert_eq!(r.len(), 1);
        assert!(r[0].is_err());
        // truncated header
        assert!(messages(&[1, 0, 0]).next().unwrap().is_err());
    }

    #[test]
    fn attributes() {
        let mut b = Vec::new();
        push_attr(&mut b, 3, b"eth0\0");
        push_attr(&mut b, 0x8000 | 11, &[1]);
        let a: Vec<_> = attrs(&b).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].string(), "eth0");
        assert_eq!(a[1].ty, 11, "nested flag stripped");
        assert_eq!(a[1].u8(), Some(1));
        // a length that runs past the buffer stops iteration instead of panicking
        let bad = [200u8, 0, 1, 0, 0, 0];
        assert_eq!(attrs(&bad).count(), 0);
    }
}
