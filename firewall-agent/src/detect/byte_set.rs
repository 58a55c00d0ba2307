//! The set of bytes a value contains, read in one pass, so that a check whose pattern needs a
//! byte the value lacks is skipped before its regex runs.

/// A set of byte values, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    /// Returns the set of the bytes of `text`.
    pub fn of(text: &str) -> Self {
        let mut set = Self::default();
        for byte in text.bytes() {
            set.0[usize::from(byte >> 6)] |= 1 << (byte & 63);
        }
        set
    }

    /// Returns whether `byte` is in the set.
    pub fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0
    }

    /// Returns whether every byte of `bytes` is in the set.
    pub fn contains_all(&self, bytes: &[u8]) -> bool {
        bytes.iter().all(|byte| self.contains(*byte))
    }

    /// Returns whether at least one byte of `bytes` is in the set.
    pub fn contains_any(&self, bytes: &[u8]) -> bool {
        bytes.iter().any(|byte| self.contains(*byte))
    }
}

#[cfg(test)]
impl ByteSet {
    /// Returns the set of all 256 byte values, which no byte test can reject. Tests pass it
    /// to run the detectors without their byte tests.
    pub fn full() -> Self {
        Self([u64::MAX; 4])
    }
}
