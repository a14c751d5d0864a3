//! A pcap (libpcap classic format) writer: tcpdump and Wireshark read it.
//! Link type RAW (101): every record starts at the IP header, as captured.

use std::io::{self, Write};

pub const LINKTYPE_RAW: u32 = 101;
const SNAPLEN: u32 = 65535;

/// One captured packet with its kernel timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub data: Vec<u8>,
}

pub fn write<W: Write>(mut w: W, records: &[Record]) -> io::Result<()> {
    let mut h = Vec::with_capacity(24);
    h.extend(0xa1b2_c3d4u32.to_le_bytes()); // microsecond timestamps, little-endian file
    h.extend(2u16.to_le_bytes());
    h.extend(4u16.to_le_bytes());
    h.extend(0i32.to_le_bytes()); // thiszone
    h.extend(0u32.to_le_bytes()); // sigfigs
    h.extend(SNAPLEN.to_le_bytes());
    h.extend(LINKTYPE_RAW.to_le_bytes());
    w.write_all(&h)?;
    for r in records {
        let len = u32::try_from(r.data.len()).unwrap_or(u32::MAX);
        let incl = len.min(SNAPLEN);
        w.write_all(&r.ts_sec.to_le_bytes())?;
        w.write_all(&r.ts_usec.to_le_bytes())?;
        w.write_all(&incl.to_le_bytes())?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(&r.data[..incl as usize])?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let mut out = Vec::new();
        write(&mut out, &[Record { ts_sec: 1, ts_usec: 2, data: vec![0x45, 0, 0, 20] }]).unwrap();
        assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&out[20..24], &101u32.to_le_bytes());
        assert_eq!(out.len(), 24 + 16 + 4);
        assert_eq!(&out[32..36], &4u32.to_le_bytes());
    }
}
