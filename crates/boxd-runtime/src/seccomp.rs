//! The seccomp filter every box process runs under.
//!
//! It refuses (EPERM) every system call Docker's default profile refuses to a
//! container without CAP_SYS_ADMIN — mounts and the new mount API, pivot_root,
//! namespace creation and entry, kexec, bpf, perf_event_open, the keyring,
//! module loading, open_by_handle_at, userfaultfd, io_uring, clock and
//! swap changes, reboot, … — and `clone` with any namespace flag. `clone3`
//! answers ENOSYS (its flags live in memory a filter cannot read), which makes
//! libc fall back to `clone`. Only the native x86-64 system call table is
//! open: the i386 entry point (`int 0x80`, another audit arch) kills the
//! process, and an x32 call (native arch, number with bit 30 set) answers
//! EPERM whatever its number, so a kernel with x32 enabled cannot be reached
//! around the deny-list. This module never widens what the capability set
//! allows; it only narrows it.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// System calls refused outright.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    174, // create_module (removed from the kernel; refused anyway)
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    177, // get_kernel_syms (removed)
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    178, // query_module (removed)
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_uselib,
    libc::SYS_userfaultfd,
    libc::SYS_ustat,
    libc::SYS_vhangup,
    libc::SYS_fanotify_init,
    libc::SYS_afs_syscall,
    libc::SYS_tuxcall,
    libc::SYS_security,
    libc::SYS_getpmsg,
    libc::SYS_putpmsg,
    libc::SYS_vserver,
];

/// Namespace flags `clone` may not use.
const NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// `personality` values Docker allows (Linux default, and the flags tools
/// such as `setarch` need); anything else is refused.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter: {0}")]
    Apply(String),
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

/// The x32 ABI's marker in the system call number (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The program that refuses the x32 ABI: x32 calls arrive with the native
/// audit arch (so seccompiler's arch check lets them through) and a number
/// no deny-list rule matches (`unshare` is `272 | X32_SYSCALL_BIT`). Any
/// number at or above the bit answers EPERM. seccompiler keys rules by exact
/// numbers and cannot say "at or above", hence these five instructions.
fn x32_refusal() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data: nr at offset 0, arch at offset 4.
        ins(LD_W_ABS, 0, 0, 4),
        // Another arch is the other programs' business (they kill it).
        ins(JEQ_K, 0, 2, AUDIT_ARCH_X86_64),
        ins(LD_W_ABS, 0, 0, 0),
        ins(JGE_K, 1, 0, X32_SYSCALL_BIT),
        ins(RET_K, 0, 0, RET_ALLOW),
        ins(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
    ]
}

/// Builds the three programs: the EPERM deny-list, clone3 → ENOSYS, and the
/// x32 refusal.
pub fn programs() -> Result<Vec<BpfProgram>, SeccompError> {
    let build = |e: seccompiler::BackendError| SeccompError::Build(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
    let mut clone_rules = Vec::new();
    for flag in NS_FLAGS {
        clone_rules.push(
            SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?]).map_err(build)?,
        );
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let not_allowed: Vec<SeccompCondition> = PERSONALITIES
        .iter()
        .map(|p| cond(0, SeccompCmpOp::Ne, *p))
        .collect::<Result<_, _>>()?;
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(not_allowed).map_err(build)?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(build)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(build)?;
    let mut out = Vec::new();
    for f in [deny, clone3] {
        out.push(BpfProgram::try_from(f).map_err(build)?);
    }
    out.push(x32_refusal());
    Ok(out)
}

/// A compiled program in a form that crosses the daemon → box boundary:
/// each BPF instruction packed into one `u64` (code, jt, jf, k).
pub type EncodedProgram = Vec<u64>;

/// Compiles the filters once (in the daemon), ready to ship to every box.
pub fn encoded() -> Result<Vec<EncodedProgram>, SeccompError> {
    Ok(programs()?
        .into_iter()
        .map(|p| {
            p.iter()
                .map(|i| {
                    i.code as u64 | (i.jt as u64) << 16 | (i.jf as u64) << 24 | (i.k as u64) << 32
                })
                .collect()
        })
        .collect())
}

/// Installs encoded filters on the calling thread (and so on its future
/// children). Requires `no_new_privs` to be set first.
pub fn install(programs: &[EncodedProgram]) -> Result<(), SeccompError> {
    for p in programs {
        let prog: BpfProgram = p
            .iter()
            .map(|w| seccompiler::sock_filter {
                code: *w as u16,
                jt: (*w >> 16) as u8,
                jf: (*w >> 24) as u8,
                k: (*w >> 32) as u32,
            })
            .collect();
        seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Apply(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_build_and_survive_encoding() {
        let progs = super::programs().unwrap();
        let enc = super::encoded().unwrap();
        assert_eq!(progs.len(), 3);
        for (p, e) in progs.iter().zip(&enc) {
            assert_eq!(p.len(), e.len());
            for (i, w) in p.iter().zip(e) {
                assert_eq!(
                    (i.code, i.jt, i.jf, i.k),
                    (
                        *w as u16,
                        (*w >> 16) as u8,
                        (*w >> 24) as u8,
                        (*w >> 32) as u32
                    )
                );
            }
        }
    }
}
