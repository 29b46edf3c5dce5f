//! Checked little-endian reading and writing of frame fields.
//!
//! Every read is bounds-checked and fails with [`ErrorKind::CorruptFrame`](crate::ErrorKind)
//! naming the field, so parsing untrusted bytes never panics.

use crate::error::{Error, Result};

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread bytes.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::truncated(format!(
                "truncated frame: {what} needs {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned LEB128 integer of at most 10 bytes that fits in a `u64`; non-minimal
    /// encodings are refused so that every value has exactly one encoding.
    pub fn uvarint(&mut self, what: &str) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(Error::corrupt(format!("{what}: varint overflows 64 bits")));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(Error::corrupt(format!("{what}: non-minimal varint")));
                }
                return Ok(value);
            }
        }
        Err(Error::corrupt(format!(
            "{what}: varint longer than 10 bytes"
        )))
    }

    /// A varint that must fit in a `usize` and be at most `max`.
    pub fn uvarint_max(&mut self, max: u64, what: &str) -> Result<usize> {
        let v = self.uvarint(what)?;
        if v > max {
            return Err(Error::corrupt(format!("{what} is {v}, more than {max}")));
        }
        usize::try_from(v).map_err(|_| Error::corrupt(format!("{what} does not fit in memory")))
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &str) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::corrupt(format!(
                "{what}: {} unexpected trailing bytes",
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The number of bytes [`put_uvarint`] writes for `v`.
pub fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_len() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v), "{v}");
            let mut r = Reader::new(&b);
            assert_eq!(r.uvarint("v").unwrap(), v);
            r.finish("v").unwrap();
        }
    }

    #[test]
    fn varint_rejects_bad_encodings() {
        // Non-minimal zero.
        assert!(Reader::new(&[0x80, 0x00]).uvarint("v").is_err());
        // Overflowing the 10th byte.
        let mut b = vec![0xff; 9];
        b.push(0x02);
        assert!(Reader::new(&b).uvarint("v").is_err());
        // Truncated.
        assert!(Reader::new(&[0x80]).uvarint("v").is_err());
        assert!(Reader::new(&[0xff; 11]).uvarint("v").is_err());
    }

    #[test]
    fn reads_are_bounds_checked() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a").unwrap(), 0x0201);
        assert!(r.u16("b").is_err());
        assert_eq!(r.u8("c").unwrap(), 3);
        assert!(r.u8("d").is_err());
        assert!(r.finish("e").is_ok());
    }
}
