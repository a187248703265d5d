//! The production write path: one io_uring ring, owned by the writer thread, that does
//! a group's write and its `fdatasync` as one linked submission.

use std::io;
use std::os::unix::io::RawFd;

use io_uring::{opcode, squeue, types, IoUring};

const USER_WRITE: u64 = 1;
const USER_SYNC: u64 = 2;

/// An io_uring ring for segment writes.
pub(crate) struct Uring {
    ring: IoUring,
}

impl Uring {
    /// Sets up a small ring; fails where io_uring is unavailable (old kernel, seccomp).
    pub fn new() -> io::Result<Self> {
        Ok(Uring {
            ring: IoUring::new(8)?,
        })
    }

    /// Writes all of `buf` at `offset` of `fd` and, if `sync`, then `fdatasync`s it
    /// (linked, so the sync is ordered after the write). Returns when both completed.
    ///
    /// With `sync_in_ring == false` only the write goes through the ring and the sync is
    /// a plain `fdatasync` call on this thread (see `Config::io_uring_sync`).
    pub fn write_and_sync(
        &mut self,
        fd: RawFd,
        buf: &[u8],
        offset: u64,
        sync: bool,
        sync_in_ring: bool,
    ) -> io::Result<()> {
        if sync && !sync_in_ring {
            self.write_and_sync(fd, buf, offset, false, true)?;
            // SAFETY: plain syscall on an fd owned by the caller; no memory is passed.
            if unsafe { libc::fdatasync(fd) } != 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(());
        }
        let mut done = 0usize;
        let mut synced = !sync;
        while done < buf.len() || !synced {
            let rest = &buf[done..];
            let len = rest.len().min(1 << 30) as u32;
            let mut want = 0usize;
            {
                let mut sq = self.ring.submission();
                if len > 0 {
                    let mut write = opcode::Write::new(types::Fd(fd), rest.as_ptr(), len)
                        .offset(offset + done as u64)
                        .build()
                        .user_data(USER_WRITE);
                    if sync {
                        write = write.flags(squeue::Flags::IO_LINK);
                    }
                    // SAFETY: `rest` stays borrowed (and so alive and unmoved) until every
                    // submitted entry has completed: we wait for all of them below before
                    // returning or touching the buffer again.
                    unsafe { sq.push(&write) }
                        .map_err(|_| io::Error::other("io_uring queue full"))?;
                    want += 1;
                }
                if sync {
                    let fsync = opcode::Fsync::new(types::Fd(fd))
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(USER_SYNC);
                    // SAFETY: fsync carries no buffer.
                    unsafe { sq.push(&fsync) }
                        .map_err(|_| io::Error::other("io_uring queue full"))?;
                    want += 1;
                }
            }
            self.submit_wait(want)?;
            let mut err = None;
            let mut got = 0usize;
            while got < want {
                let Some(cqe) = self.ring.completion().next() else {
                    // Not all completions are visible yet: wait for the rest.
                    self.submit_wait(want - got)?;
                    continue;
                };
                got += 1;
                let res = cqe.result();
                match cqe.user_data() {
                    USER_WRITE if res < 0 => err = Some(io::Error::from_raw_os_error(-res)),
                    USER_WRITE if res == 0 => err = Some(io::ErrorKind::WriteZero.into()),
                    USER_WRITE => done += res as usize,
                    // A short write breaks the link and cancels the sync: retried.
                    _ if res == -libc::ECANCELED => {}
                    _ if res < 0 => err = Some(io::Error::from_raw_os_error(-res)),
                    _ => synced = done == buf.len(),
                }
            }
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(())
    }

    fn submit_wait(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn writes_and_syncs_when_available() {
        let Ok(mut ring) = Uring::new() else {
            eprintln!("io_uring unavailable here; the fallback path is what runs");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).unwrap();
        ring.write_and_sync(file.as_raw_fd(), b"hello", 3, true, true)
            .unwrap();
        ring.write_and_sync(file.as_raw_fd(), b"", 0, true, true)
            .unwrap();
        ring.write_and_sync(file.as_raw_fd(), b"xy", 0, false, true)
            .unwrap();
        ring.write_and_sync(file.as_raw_fd(), b"z", 8, true, false)
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"xy\0helloz");
    }
}
