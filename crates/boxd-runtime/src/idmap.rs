//! User-namespace id ranges: every box gets its own range of 65536 host uids
//! and gids, and box root is the first of them — an unprivileged, otherwise
//! unused host id.
//!
//! This module allocates ranges (slots) and makes the user namespace for a
//! range. It never maps host root (or any id outside the box's range) into a
//! box.

use std::collections::BTreeSet;
use std::os::fd::{FromRawFd, OwnedFd};

/// Ids per box: a full 16-bit range, so every image uid/gid maps.
pub const IDS_PER_BOX: u32 = 65536;
/// First host id used for boxes; far above any real host account.
pub const FIRST_HOST_ID: u32 = 1 << 30;
/// How many boxes can exist at once.
pub const MAX_SLOTS: u32 = 16384;
/// Host id owning volume files on disk (the range below the boxes'): a
/// volume is mounted id-mapped so this id is box root in every box, and
/// nothing a box writes there is owned by a real host account.
pub const VOLUME_OWNER: u32 = FIRST_HOST_ID - IDS_PER_BOX;

/// The host id that box id 0 (root) maps to for `slot`.
pub fn host_base(slot: u32) -> u32 {
    FIRST_HOST_ID + slot * IDS_PER_BOX
}

/// Which slots are taken. Slots are handed out round-robin (the next
/// free one after the last taken), so a slot just released — whose
/// network namespace the kernel may still be tearing down — is reused
/// as late as possible.
#[derive(Debug)]
pub struct Slots {
    used: BTreeSet<u32>,
    next: u32,
    limit: u32,
}

impl Default for Slots {
    fn default() -> Self {
        Slots::new(MAX_SLOTS)
    }
}

impl Slots {
    /// Slots `0..limit` (at most [`MAX_SLOTS`]).
    pub fn new(limit: u32) -> Self {
        Slots {
            used: BTreeSet::new(),
            next: 0,
            limit: limit.clamp(1, MAX_SLOTS),
        }
    }

    /// Takes the next free slot.
    pub fn take(&mut self) -> Option<u32> {
        let slot = (self.next..self.limit)
            .chain(0..self.next)
            .find(|s| !self.used.contains(s))?;
        self.used.insert(slot);
        self.next = (slot + 1) % self.limit;
        Some(slot)
    }
    /// Marks a slot used (re-adoption of an existing box).
    pub fn mark(&mut self, slot: u32) {
        self.used.insert(slot);
    }
    pub fn release(&mut self, slot: u32) {
        self.used.remove(&slot);
    }
    pub fn len(&self) -> usize {
        self.used.len()
    }
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

/// Creates a user namespace mapping box ids `0..IDS_PER_BOX` to host ids
/// `base..base+IDS_PER_BOX` and returns a descriptor for it.
///
/// A helper task is cloned into the new namespace (sharing our memory, on its
/// own small stack, doing nothing but `pause`), its maps are written, its
/// namespace is opened, and it is killed. The namespace lives on through the
/// returned descriptor.
pub fn create_userns(base: u32) -> std::io::Result<OwnedFd> {
    create_userns_mapping(0, base)
}

/// Creates a user namespace mapping ids `inside..inside+IDS_PER_BOX` to
/// host ids `base..base+IDS_PER_BOX`. Used as the id map of a mount: with
/// `inside` = [`VOLUME_OWNER`], files owned by the volume owner on disk
/// appear owned by the box's root (`base`).
pub fn create_userns_mapping(inside: u32, base: u32) -> std::io::Result<OwnedFd> {
    extern "C" fn idle(parent: *mut libc::c_void) -> libc::c_int {
        // The helper has a copy of every descriptor of the daemon (the data
        // dir lock, the database, half-made boxes' control sockets): it must
        // not outlive a daemon that dies before killing it.
        // SAFETY: prctl and getppid are plain syscalls; `parent` points to
        // the caller's pid, alive until the caller kills this helper.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != *(parent as *const libc::pid_t) {
                libc::_exit(0);
            }
        }
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    let mut stack = vec![0u8; 16 * 1024];
    // SAFETY: getpid has no preconditions.
    let mut me: libc::pid_t = unsafe { libc::getpid() };
    // SAFETY: the child runs `idle` on its own stack and makes no allocation;
    // the stack outlives it (we wait for the child before returning).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
        libc::clone(
            idle,
            top,
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::SIGCHLD,
            (&raw mut me).cast(),
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let result = (|| {
        let map = format!("{inside} {base} {IDS_PER_BOX}\n");
        std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        let path = std::ffi::CString::new(format!("/proc/{pid}/ns/user"))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: plain open of a path we own the string for.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by open and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })();
    // SAFETY: pid is our child; kill and reap it so no zombie stays.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
    }
    drop(stack);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_go_round_robin_within_the_limit() {
        let mut s = Slots::new(4);
        assert_eq!(s.take(), Some(0));
        assert_eq!(s.take(), Some(1));
        s.mark(2);
        s.release(0);
        assert_eq!(s.take(), Some(3), "a released slot waits its turn");
        assert_eq!(s.take(), Some(0));
        assert_eq!(s.take(), None, "all four taken");
        s.release(1);
        assert_eq!(s.take(), Some(1));
        assert_eq!(Slots::new(u32::MAX).limit, MAX_SLOTS);
        assert!(host_base(MAX_SLOTS - 1).checked_add(IDS_PER_BOX).is_some());
    }
}
