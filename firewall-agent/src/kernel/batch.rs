//! Batched hash map updates with `BPF_MAP_UPDATE_BATCH`, which aya 0.14 does not wrap.
//!
//! One system call writes a whole chunk of entries, where `bpf_map_update_elem` writes one. The
//! kernel accepts the command for hash and array maps since Linux 5.6, but not for LPM tries,
//! so ranges keep their single updates.

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

use aya::Pod;

/// `BPF_MAP_UPDATE_BATCH` of the kernel's `enum bpf_cmd` (`include/uapi/linux/bpf.h`).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries per system call. The kernel handles each entry on its own, so a larger chunk saves
/// only system calls, whose cost is already small next to the work on 4,096 entries.
pub(crate) const CHUNK_ENTRIES: usize = 4096;

/// `BPF_ANY` of the kernel's update flags: insert or replace. The batch command accepts no
/// other flag than `BPF_F_LOCK` (`generic_map_update_batch` in `kernel/bpf/syscall.c`), so a
/// batch cannot be limited to inserts.
const BPF_ANY: u64 = 0;

/// The `batch` member of the kernel's `union bpf_attr`, as `BPF_MAP_*_BATCH` reads it.
///
/// Every field is 8-byte aligned in the kernel's layout, and `repr(C)` gives the same offsets:
/// 0, 8, 16, 24, 32, 36, 40, 48, so the struct is 56 bytes with no padding.
#[repr(C)]
#[derive(Debug, Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    /// Entries to write on input; entries written on output, also when the call fails.
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A batched update that the kernel stopped before its end.
#[derive(Debug, thiserror::Error)]
#[error("BPF_MAP_UPDATE_BATCH stopped after {applied} entries")]
pub(crate) struct BatchStopped {
    /// Entries written, counted from the first one passed in; they stay in the map.
    pub(crate) applied: usize,
    /// The error the kernel returned. `E2BIG` means a full hash map.
    #[source]
    pub(crate) source: io::Error,
}

/// Inserts or replaces `keys[i]` with `values[i]` in the hash map behind `map_fd`,
/// [`CHUNK_ENTRIES`] per system call.
///
/// # Errors
///
/// [`BatchStopped`] with the number of entries written, counted from the first, when the kernel
/// stops early or rejects the command. Entries before that count stay written.
pub(crate) fn update_batch<K: Pod, V: Pod>(
    map_fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchStopped> {
    if keys.len() != values.len() {
        return Err(BatchStopped {
            applied: 0,
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} keys but {} values", keys.len(), values.len()),
            ),
        });
    }

    let mut applied = 0;
    for (keys, values) in keys.chunks(CHUNK_ENTRIES).zip(values.chunks(CHUNK_ENTRIES)) {
        match update_chunk(map_fd, keys, values) {
            Ok(()) => applied += keys.len(),
            Err((written, source)) => {
                return Err(BatchStopped {
                    applied: applied + written,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Issues one `BPF_MAP_UPDATE_BATCH` for a chunk of at most [`CHUNK_ENTRIES`] entries. On error,
/// returns how many entries the kernel wrote before it stopped.
fn update_chunk<K: Pod, V: Pod>(
    map_fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, io::Error)> {
    let Ok(count) = u32::try_from(keys.len()) else {
        return Err((0, io::Error::from(io::ErrorKind::InvalidInput)));
    };
    let Ok(fd) = u32::try_from(map_fd.as_raw_fd()) else {
        return Err((0, io::Error::from_raw_os_error(libc::EBADF)));
    };
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd,
        elem_flags: BPF_ANY,
        ..BatchAttr::default()
    };
    let size = std::mem::size_of::<BatchAttr>() as libc::c_uint;

    // SAFETY: `attr` is a valid `bpf_attr` batch member for `size` bytes, and the kernel reads
    // nothing past `size`, because it treats missing bytes as zero. `keys` and `values` point to
    // `count` contiguous `Pod` entries each, which outlive the call. `Pod` types are `repr(C)`
    // plain integers, so their bytes are the key and value layout that aya checked when it opened
    // the map. The kernel writes only `attr.count`, through the pointer to `attr`.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            std::ptr::from_mut(&mut attr),
            size,
        )
    };
    if result < 0 {
        let source = io::Error::last_os_error();
        // The kernel writes `count` back only once it has started on the entries, and then it
        // is below the input, because the entry it stopped at was not written. A count still
        // equal to the input means that the call failed before the first entry.
        let written = if attr.count < count {
            usize::try_from(attr.count).unwrap_or(0)
        } else {
            0
        };
        return Err((written, source));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_attr_matches_kernel_layout() {
        assert_eq!(std::mem::size_of::<BatchAttr>(), 56);
        assert_eq!(std::mem::offset_of!(BatchAttr, count), 32);
        assert_eq!(std::mem::offset_of!(BatchAttr, map_fd), 36);
        assert_eq!(std::mem::offset_of!(BatchAttr, elem_flags), 40);
        assert_eq!(std::mem::offset_of!(BatchAttr, flags), 48);
    }

    #[test]
    fn mismatched_lengths_rejected_before_the_kernel() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = std::os::fd::AsFd::as_fd(&file);

        let error = update_batch(fd, &[1u32, 2], &[1u64]).expect_err("two keys and one value");

        assert_eq!(error.applied, 0);
        assert_eq!(error.source.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn non_map_fd_reports_nothing_applied() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = std::os::fd::AsFd::as_fd(&file);

        let error = update_batch(fd, &[1u32], &[1u64]).expect_err("/dev/null is not a BPF map");

        assert_eq!(error.applied, 0);
    }
}
