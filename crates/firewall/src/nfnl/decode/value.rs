//! Register and element bytes read as values: addresses, ports, prefixes, the ranges of an
//! interval set, a data map's data as nft prints it.

use crate::nfnl::expr::*;
use conndoc_facts::Family;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) fn ne_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[..n].copy_from_slice(&b[..n]);
    u32::from_ne_bytes(a)
}

pub(super) fn be_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// An address from (possibly fewer) leading bytes, zero-filled.
pub(super) fn addr(fam: Family, b: &[u8]) -> IpAddr {
    match fam {
        Family::Ipv4 => {
            let mut a = [0u8; 4];
            let n = b.len().min(4);
            a[..n].copy_from_slice(&b[..n]);
            IpAddr::V4(Ipv4Addr::from(a))
        }
        Family::Ipv6 => {
            let mut a = [0u8; 16];
            let n = b.len().min(16);
            a[..n].copy_from_slice(&b[..n]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    }
}

/// An address of `fam` from the first bytes of a register value.
pub(super) fn addr_of(fam: Family, b: &[u8]) -> Option<IpAddr> {
    let n = if fam == Family::Ipv4 { 4 } else { 16 };
    (b.len() >= n).then(|| addr(fam, &b[..n]))
}

/// A data map's element data as nft prints it, from the map's data type (nft's ids,
/// concatenations 6 bits a part: `ipv4_addr . inet_service` is 7 << 6 | 13); None for a
/// type conndoc does not print.
pub(super) fn data_text(ty: u32, v: &[u8]) -> Option<String> {
    let mut at = 0usize;
    let mut out = Vec::new();
    for p in parts_of(ty) {
        let (text, len) = match p {
            7 => (addr_of(Family::Ipv4, v.get(at..)?)?.to_string(), 4),
            8 => (addr_of(Family::Ipv6, v.get(at..)?)?.to_string(), 16),
            13 => (be_u16(v.get(at..)?)?.to_string(), 2),
            _ => return None,
        };
        out.push(text);
        at += (len + 3) & !3;
    }
    // An address range as data (`dnat prefix to … map { K : 10.77.1.0/24 }`): the first
    // address, then the last, as nft prints them.
    if let ([7 | 8], true) = (&parts_of(ty)[..], v.len() == 2 * at) {
        let fam = if at == 4 { Family::Ipv4 } else { Family::Ipv6 };
        let (a, b) = (addr_of(fam, v)?, addr_of(fam, &v[at..])?);
        return Some(match range_prefix_len(a, b) {
            Some(len) => format!("{a}/{len}"),
            None => format!("{a}-{b}"),
        });
    }
    (!out.is_empty()).then(|| out.join(" . "))
}

/// A concatenated type's parts (nft's ids, 6 bits each), first part first.
fn parts_of(ty: u32) -> Vec<u32> {
    let mut parts = Vec::new();
    let mut t = ty;
    while t != 0 {
        parts.push(t & 0x3f);
        t >>= 6;
    }
    parts.reverse();
    parts
}

/// The prefix length when `a..=b` is exactly one aligned prefix (`10.77.1.2-10.77.1.3` is
/// `10.77.1.2/31`).
pub(super) fn range_prefix_len(a: IpAddr, b: IpAddr) -> Option<u32> {
    let (x, y, bits) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    let span = y.checked_sub(x)?.checked_add(1)?;
    (span.is_power_of_two() && x % span == 0).then(|| bits - span.trailing_zeros())
}

pub(super) fn full_bits(fam: Family) -> u8 {
    if fam == Family::Ipv4 {
        32
    } else {
        128
    }
}

/// Leading one bits of a mask made only of leading ones, else None.
pub(super) fn prefix_len(mask: &[u8]) -> Option<u8> {
    let mut bits = 0u32;
    let mut done = false;
    for &b in mask {
        if done && b != 0 {
            return None;
        }
        let ones = b.leading_ones();
        if b.count_ones() != ones {
            return None;
        }
        bits += ones;
        if ones < 8 {
            done = true;
        }
    }
    u8::try_from(bits).ok()
}

/// Big-endian `b - 1` (the exclusive end of an interval to an inclusive one).
pub(super) fn minus_one(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    for x in v.iter_mut().rev() {
        if *x == 0 {
            *x = 0xff;
        } else {
            *x -= 1;
            break;
        }
    }
    v
}

/// A set's elements as inclusive (low, high) ranges of key bytes with their data.
/// Interval sets hold each range as a start element and an end element (flagged
/// NFT_SET_ELEM_INTERVAL_END, exclusive); the kernel dumps them in any order.
pub(super) fn set_ranges(set: &SetMsg) -> Vec<(Vec<u8>, Vec<u8>, Option<Data>)> {
    let mut out = Vec::new();
    if set.flags & NFT_SET_INTERVAL != 0 && set.elems.iter().all(|e| e.key_end.is_none()) {
        let mut v: Vec<&SetElem> = set.elems.iter().collect();
        // By key; at one key an end (closing the range below) before a start.
        v.sort_by(|a, b| {
            a.key.cmp(&b.key).then((b.flags & NFT_SET_ELEM_INTERVAL_END).cmp(&(a.flags & NFT_SET_ELEM_INTERVAL_END)))
        });
        let mut open: Option<&SetElem> = None;
        for e in v {
            if e.flags & NFT_SET_ELEM_INTERVAL_END != 0 {
                if let Some(s) = open.take() {
                    out.push((s.key.clone(), minus_one(&e.key), s.data.clone()));
                }
            } else if let Some(s) = open.replace(e) {
                // Two starts in a row: the first ran up to the second.
                out.push((s.key.clone(), minus_one(&e.key), s.data.clone()));
            }
        }
        if let Some(s) = open {
            out.push((s.key.clone(), vec![0xff; s.key.len()], s.data.clone()));
        }
    } else {
        for e in &set.elems {
            out.push((e.key.clone(), e.key_end.clone().unwrap_or_else(|| e.key.clone()), e.data.clone()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// The prefix length when [lo, hi] is exactly one CIDR block.
pub(super) fn range_prefix(lo: &[u8], hi: &[u8]) -> Option<u8> {
    if lo.len() != hi.len() {
        return None;
    }
    let a = lo.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let z = hi.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let width = (lo.len() * 8) as u32;
    let host = a ^ z;
    // host bits must be a run of trailing ones, lo has them clear and hi set
    if host & host.wrapping_add(1) != 0 || a & host != 0 || z & host != host {
        return None;
    }
    u8::try_from(width - host.count_ones()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_ranges() {
        assert_eq!(prefix_len(&[0xff, 0xff, 0xf0, 0]), Some(20));
        assert_eq!(prefix_len(&[0xff, 0x0f]), None);
        assert_eq!(prefix_len(&[0xf0, 0xff]), None);
        assert_eq!(minus_one(&[10, 77, 0, 16]), vec![10, 77, 0, 15]);
        assert_eq!(minus_one(&[1, 0]), vec![0, 0xff]);
        assert_eq!(range_prefix(&[10, 77, 0, 0], &[10, 77, 0, 15]), Some(28));
        assert_eq!(range_prefix(&[10, 0, 0, 1], &[10, 0, 0, 9]), None);
        assert_eq!(range_prefix(&[0, 0, 0, 0], &[255, 255, 255, 255]), Some(0));
    }

    #[test]
    fn interval_set_elements() {
        // recorded for `elements = { 10.77.0.0/28, 192.0.2.7 }`: start and end (flag 1) keys
        let el = |k: [u8; 4], end: bool| SetElem {
            key: k.to_vec(),
            key_end: None,
            flags: u32::from(end),
            data: None,
            comment: None,
        };
        let s = SetMsg {
            family: NfFamily::INET,
            table: "t".into(),
            name: "blocked".into(),
            flags: NFT_SET_INTERVAL,
            key_len: 4,
            data_type: None,
            elems: vec![
                el([192, 0, 2, 8], true),
                el([192, 0, 2, 7], false),
                el([10, 77, 0, 16], true),
                el([10, 77, 0, 0], false),
                el([0, 0, 0, 0], true),
            ],
        };
        let r: Vec<_> = set_ranges(&s).into_iter().map(|(a, z, _)| (a, z)).collect();
        assert_eq!(r, vec![(vec![10, 77, 0, 0], vec![10, 77, 0, 15]), (vec![192, 0, 2, 7], vec![192, 0, 2, 7])]);
    }
}
