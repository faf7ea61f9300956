//! The in-box half of box creation: what the new box's first process does
//! before it becomes `boxd-agent`.
//!
//! The daemon clones this process into new mount, pid, net, uts and ipc
//! namespaces (owned by the host's user namespace, so nothing inside can
//! reconfigure them) and execs the agent binary, which calls [`enter_box`].
//! Still host root, it builds the box root — overlay mounts over id-mapped
//! image layers, fresh `/proc`, minimal `/dev`, read-only `/sys`, tmpfs
//! `/tmp`, masked and read-only paths — pivots into it, unshares a cgroup
//! namespace, joins the box's user namespace as box root, drops capabilities
//! to the OCI default set, sets `no_new_privs` and installs the seccomp
//! filter. Nothing here may keep a host path, descriptor or privilege once
//! it returns.

use crate::error::{Result, RuntimeError};
use boxd_agent::AgentConfig;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Descriptor numbers the agent is started with (the box's user namespace
/// arrives later over the control socket).
pub const CONTROL_FD: i32 = 3;
pub const LISTENER_FD: i32 = 4;

/// One overlay mount of the box root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlaySpec {
    /// Path inside the box (`/`, `/usr`, …).
    pub target: String,
    /// Read-only layers, top-most first (mounted id-mapped).
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Everything the box's first process needs to build the box.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupConfig {
    pub hostname: String,
    /// An empty directory (shared by all boxes): each box mounts a private
    /// tmpfs on it in its own mount namespace and assembles its root and
    /// id-mapped layer stages there, so those mountpoints cost no disk I/O.
    pub scratch: PathBuf,
    /// Root overlay first, then nested ones.
    pub overlays: Vec<OverlaySpec>,
    /// Host id of box root (for tmpfs and device ownership).
    pub host_root_id: u32,
    /// Size of `/tmp` and `/dev/shm`, in bytes.
    pub tmp_bytes: u64,
    /// The CA bundle mounted read-only over the image's.
    pub trust: Option<crate::TrustBundle>,
    /// Volumes, mounted last (id-mapped by the second user namespace).
    #[serde(default)]
    pub volumes: Vec<crate::VolumeMount>,
    /// The seccomp filters, compiled once by the daemon.
    pub seccomp: Vec<crate::seccomp::EncodedProgram>,
    pub agent: AgentConfig,
}

/// The OCI runtime spec's default masked paths.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The OCI runtime spec's default read-only paths.
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Reads the config from the control descriptor, sets the box up and
/// reports the outcome back; returns the agent's listener and config.
/// On failure the error is reported to the daemon and returned.
pub fn enter_box() -> Result<(UnixListener, AgentConfig)> {
    // No descriptor beyond ours survives from the daemon (this runs before
    // the user namespace descriptor is received).
    // SAFETY: close_range only closes descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (LISTENER_FD + 1) as u32,
            u32::MAX,
            0u32,
        )
    };
    // SAFETY: the daemon started us with these descriptors open and owned by us.
    let mut control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let listener = unsafe { UnixListener::from_raw_fd(LISTENER_FD) };
    // dup2 cleared close-on-exec; no process the agent spawns may inherit it.
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(LISTENER_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let result = prepare_namespaces()
        .and_then(|()| read_config(&mut control))
        .and_then(|(cfg, namespaces)| {
            setup(&cfg, &namespaces)?;
            Ok(cfg)
        });
    match result {
        Ok(cfg) => {
            control
                .write_all(b"ok")
                .map_err(RuntimeError::io("report to the daemon"))?;
            Ok((listener, cfg.agent))
        }
        Err(e) => {
            let report = match &e {
                RuntimeError::BadSpec(why) => format!("{}{why}", crate::spawn::BAD_SPEC),
                other => format!("error: {other}"),
            };
            let _ = control.write_all(report.as_bytes());
            Err(e)
        }
    }
}

/// Receives the config length with the user namespace descriptors attached
/// (the box's, then the volumes' id map when it has volumes), then the
/// config itself.
fn read_config(control: &mut UnixStream) -> Result<(SetupConfig, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut len = [0u8; 4];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let mut namespaces = Vec::new();
    let got = {
        let mut iov = [std::io::IoSliceMut::new(&mut len)];
        let msg = recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(setup_err("receive the user namespace"))?;
        for c in msg.cmsgs().map_err(setup_err("read control message"))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us.
                    namespaces.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        msg.bytes
    };
    if got != 4 {
        return Err(RuntimeError::Setup("short config header".into()));
    }
    if namespaces.is_empty() {
        return Err(RuntimeError::Setup("no user namespace received".into()));
    }
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    control
        .read_exact(&mut buf)
        .map_err(RuntimeError::io("read the box config"))?;
    let cfg = serde_json::from_slice(&buf)
        .map_err(|e| RuntimeError::Setup(format!("bad box config: {e}")))?;
    Ok((cfg, namespaces))
}

fn setup_err(what: &str) -> impl FnOnce(nix::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Setup(format!("{what}: {e}"))
}

/// What needs no config: done while the daemon is still preparing the box.
fn prepare_namespaces() -> Result<()> {
    loopback_up()?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(setup_err("make mounts private"))
}

fn setup(cfg: &SetupConfig, namespaces: &[OwnedFd]) -> Result<()> {
    let userns = &namespaces[0];
    nix::unistd::sethostname(&cfg.hostname).map_err(setup_err("set hostname"))?;
    allow_ping(cfg.host_root_id)?;
    build_root(cfg, userns)?;
    if !cfg.volumes.is_empty() {
        let volns = namespaces
            .get(1)
            .ok_or_else(|| RuntimeError::Setup("no volume id map received".into()))?;
        mount_volumes(
            &cfg.scratch.join("root"),
            &cfg.volumes,
            volns,
            cfg.host_root_id,
        )?;
    }
    pivot(&cfg.scratch.join("root"))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(setup_err("cgroup namespace"))?;
    become_box_root(userns)?;
    harden(&cfg.seccomp)
}

/// Lets every group of the box open ICMP echo sockets (`SOCK_DGRAM`,
/// `IPPROTO_ICMP`/`ICMPV6`) in its own network namespace, so `ping` works
/// without `CAP_NET_RAW`: an echo socket sends only echo requests, with the
/// kernel choosing the identifier, and leaves the box under the same
/// host-side rules as any other packet (ICMP to anything but the box's own
/// addresses is dropped in the host namespace). The sysctl is per network
/// namespace and read in host ids (this runs before the box's user
/// namespace is joined, through the host's `/proc`, which shows the
/// caller's network namespace).
fn allow_ping(host_root_id: u32) -> Result<()> {
    let last = host_root_id + crate::idmap::IDS_PER_BOX - 1;
    std::fs::write(
        "/proc/sys/net/ipv4/ping_group_range",
        format!("{host_root_id} {last}"),
    )
    .map_err(RuntimeError::io("allow ICMP echo sockets in the box"))
}

/// Gives the box a boot id of its own (a random UUID for this start of
/// the box) over `/proc/sys/kernel/random/boot_id`, which would otherwise
/// show the host's and tie every box on it together. The file is host
/// root's, read-only to the box.
fn own_boot_id(scratch: &Path, root: &Path) -> Result<()> {
    use std::io::Read;
    let target = root.join("proc/sys/kernel/random/boot_id");
    if !target.exists() {
        return Ok(());
    }
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(RuntimeError::io("read random bytes for the boot id"))?;
    b[6] = (b[6] & 0x0f) | 0x40; // UUID version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}\n",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let file = scratch.join("boot_id");
    std::fs::write(&file, uuid).map_err(RuntimeError::io("write the box's boot id"))?;
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o444))
        .map_err(RuntimeError::io("make the box's boot id read-only"))?;
    mount(
        Some(&file),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(setup_err("mount the box's boot id"))
}

/// Brings up `lo` in the box's fresh network namespace.
fn loopback_up() -> Result<()> {
    // SAFETY: a plain socket + ioctl on a zeroed ifreq naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(RuntimeError::io("loopback socket")(
                std::io::Error::last_os_error(),
            ));
        }
        let s = OwnedFd::from_raw_fd(s);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(RuntimeError::io("read lo flags")(
                std::io::Error::last_os_error(),
            ));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(RuntimeError::io("bring lo up")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| RuntimeError::Setup(format!("path {} contains NUL", p.display())))
}

/// Mounts `src` read-only at `dst` with ownership shifted into the box's
/// user namespace, so host-root files appear root-owned inside.
fn idmapped_bind(src: &Path, dst: &Path, userns: &OwnedFd) -> Result<()> {
    idmapped_bind_with(src, dst, userns, true)
}

/// [`idmapped_bind`], read-write unless `read_only`; always nosuid, nodev.
fn idmapped_bind_with(src: &Path, dst: &Path, userns: &OwnedFd, read_only: bool) -> Result<()> {
    let (csrc, cdst) = (cstr(src)?, cstr(dst)?);
    let empty = c"";
    let err = |what: &str| {
        RuntimeError::Setup(format!(
            "{what} {}: {}",
            src.display(),
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: raw mount-API syscalls on valid C strings and a live descriptor.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csrc.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        if fd < 0 {
            return Err(err("clone mount of"));
        }
        let tree = OwnedFd::from_raw_fd(fd as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP
                | MOUNT_ATTR_NOSUID
                | MOUNT_ATTR_NODEV
                | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        if libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) < 0
        {
            return Err(err("id-map"));
        }
        if libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            cdst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) < 0
        {
            return Err(err("attach"));
        }
    }
    Ok(())
}

fn inside(rootfs: &Path, target: &str) -> PathBuf {
    rootfs.join(target.trim_start_matches('/'))
}

/// `rel` in the box's root, checked to be a real directory reached without
/// a symlink: here, before the pivot, an image's symlink would be resolved
/// against the host's root, and a mount through it would land there.
fn mount_point(root: &Path, rel: &str) -> Result<PathBuf> {
    let dir = root.join(rel);
    let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|md| md.is_dir());
    if !is_dir || through_link(root, Path::new(rel)) {
        return Err(RuntimeError::Setup(format!(
            "the image's /{rel} is not a directory (a symlink or missing): \
             boxd mounts its own there"
        )));
    }
    Ok(dir)
}

/// Whether the existing part of `rel` in the box's root goes through a
/// symlink or a non-directory.
fn through_link(root: &Path, rel: &Path) -> bool {
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    false
}

fn mnt(src: &str, dst: &Path, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<()> {
    mount(Some(src), dst, Some(fstype), flags, data)
        .map_err(|e| RuntimeError::Setup(format!("mount {fstype} at {}: {e}", dst.display())))
}

fn build_root(cfg: &SetupConfig, userns: &OwnedFd) -> Result<()> {
    mnt(
        "tmpfs",
        &cfg.scratch,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=700,size=65536"),
    )?;
    let root = &cfg.scratch.join("root");
    std::fs::create_dir(root).map_err(RuntimeError::io("create the root mountpoint"))?;
    let id = cfg.host_root_id;
    for (i, ov) in cfg.overlays.iter().enumerate() {
        let mut lowers = Vec::new();
        for (j, lower) in ov.lowers.iter().enumerate() {
            let stage = cfg.scratch.join(format!("layer-{i}-{j}"));
            std::fs::create_dir(&stage).map_err(RuntimeError::io("create stage dir"))?;
            idmapped_bind(lower, &stage, userns)?;
            lowers.push(stage.display().to_string());
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},index=off,xino=off,metacopy=off",
            lowers.join(":"),
            ov.upper.display(),
            ov.work.display()
        );
        mnt(
            "overlay",
            &inside(root, &ov.target),
            "overlay",
            MsFlags::MS_NODEV,
            Some(&opts),
        )?;
    }
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Some(trust) = &cfg.trust {
        mount_trust(root, trust, id)?;
    }
    mnt(
        "proc",
        &mount_point(root, "proc")?,
        "proc",
        nosuid_nodev_noexec,
        None,
    )?;
    let dev = mount_point(root, "dev")?;
    mnt(
        "tmpfs",
        &dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!("mode=755,size=65536,uid={id},gid={id}")),
    )?;
    make_devices(&dev, id)?;
    mnt(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&format!(
            "newinstance,ptmxmode=0666,mode=0620,gid={}",
            id + 5
        )),
    )?;
    let tmpfs_opts = format!("mode=1777,size={},uid={id},gid={id}", cfg.tmp_bytes);
    mnt(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        nosuid_nodev_noexec,
        Some(&tmpfs_opts),
    )?;
    mnt(
        "sysfs",
        &mount_point(root, "sys")?,
        "sysfs",
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )?;
    mnt(
        "tmpfs",
        &mount_point(root, "tmp")?,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&tmpfs_opts),
    )?;
    own_boot_id(&cfg.scratch, root)?;
    for p in MASKED {
        let target = inside(root, p);
        match std::fs::metadata(&target) {
            Ok(md) if md.is_dir() => mnt(
                "tmpfs",
                &target,
                "tmpfs",
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => mount(
                Some(&dev.join("null")),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(setup_err("mask a /proc file"))?,
            Err(_) => {}
        }
    }
    for p in READ_ONLY {
        let target = inside(root, p);
        if !target.exists() {
            continue;
        }
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(setup_err("bind a read-only path"))?;
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev_noexec,
            None::<&str>,
        )
        .map_err(setup_err("make a path read-only"))?;
    }
    Ok(())
}

/// Mounts each volume at its target in the box's root, parents first,
/// id-mapped through `volns` (volume owner → box root), read-only when
/// asked. Targets are made as directories owned by box root; a target
/// path that goes through a symlink or a non-directory is refused (it
/// would be resolved against the host's root here).
fn mount_volumes(
    root: &Path,
    volumes: &[crate::VolumeMount],
    volns: &OwnedFd,
    id: u32,
) -> Result<()> {
    let mut sorted: Vec<&crate::VolumeMount> = volumes.iter().collect();
    sorted.sort_by(|a, b| a.target.cmp(&b.target));
    for v in sorted {
        let rel = Path::new(v.target.trim_start_matches('/'));
        if v.target == "/" || !v.target.starts_with('/') {
            return Err(RuntimeError::Setup(format!(
                "volume path {:?} must be absolute and not /",
                v.target
            )));
        }
        let mut dir = root.to_path_buf();
        for part in rel.components() {
            let std::path::Component::Normal(part) = part else {
                return Err(RuntimeError::BadSpec(format!(
                    "volume path {:?} is not normalized",
                    v.target
                )));
            };
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    return Err(RuntimeError::BadSpec(format!(
                        "volume path {}: /{} is not a directory in the box's image",
                        v.target,
                        dir.strip_prefix(root).unwrap_or(&dir).display()
                    )))
                }
                Err(_) => {
                    std::fs::create_dir(&dir)
                        .map_err(RuntimeError::io(format!("create volume path {}", v.target)))?;
                    nix::unistd::chown(&dir, Some(id.into()), Some(id.into()))
                        .map_err(setup_err("chown a volume mountpoint"))?;
                }
            }
        }
        idmapped_bind_with(&v.source, &dir, volns, v.read_only)?;
    }
    Ok(())
}

/// Binds `trust.file` read-only over each bundle path that is a regular
/// file in the box's root (never through a symlink: a link is resolved
/// by the bundle it points at, if that is on the list), creating the
/// first path if the image has nothing there.
fn mount_trust(root: &Path, trust: &crate::TrustBundle, id: u32) -> Result<()> {
    let ro = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    for (i, p) in trust.paths.iter().enumerate() {
        let target = inside(root, p);
        // A bundle path under an image's symlink is not the box's own.
        if Path::new(p.trim_start_matches('/'))
            .parent()
            .is_some_and(|d| through_link(root, d))
        {
            continue;
        }
        let is_file = match std::fs::symlink_metadata(&target) {
            Ok(md) => md.file_type().is_file(),
            Err(_) if i == 0 => {
                create_bundle_stub(root, p, id)?;
                true
            }
            Err(_) => false,
        };
        if !is_file {
            continue;
        }
        mount(
            Some(&trust.file),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(setup_err("bind the CA bundle"))?;
        mount(None::<&str>, &target, None::<&str>, ro, None::<&str>)
            .map_err(setup_err("make the CA bundle read-only"))?;
    }
    Ok(())
}

/// An empty file at `path` in the box's root (directories owned by box
/// root), to mount the bundle on. Refuses to go through a symlink.
fn create_bundle_stub(root: &Path, path: &str, id: u32) -> Result<()> {
    let mut dir = root.to_path_buf();
    let rel = Path::new(path.trim_start_matches('/'));
    if let Some(parent) = rel.parent() {
        for part in parent.components() {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    return Err(RuntimeError::Setup(format!(
                        "CA bundle path {path}: {} is not a directory",
                        dir.display()
                    )))
                }
                Err(_) => {
                    std::fs::create_dir(&dir)
                        .map_err(RuntimeError::io("create the CA bundle directory"))?;
                    nix::unistd::chown(&dir, Some(id.into()), Some(id.into()))
                        .map_err(setup_err("chown the CA bundle directory"))?;
                }
            }
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(root.join(rel))
        .map_err(RuntimeError::io("create the CA bundle mountpoint"))?;
    Ok(())
}

/// Creates the minimal device nodes and links in the box's `/dev`.
fn make_devices(dev: &Path, id: u32) -> Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(setup_err("create a device node"))?;
        // mknod obeys the umask; make the mode exact and root-of-box owned.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &p,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(setup_err("chmod a device node"))?;
        std::os::unix::fs::chown(&p, Some(id), Some(id))
            .map_err(RuntimeError::io("chown a device node"))?;
    }
    for d in ["pts", "shm"] {
        std::fs::create_dir(dev.join(d)).map_err(RuntimeError::io("create /dev dirs"))?;
    }
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(RuntimeError::io("create /dev links"))?;
    }
    Ok(())
}

/// Makes `rootfs` the root and detaches the old one completely.
fn pivot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(setup_err("enter the box root"))?;
    nix::unistd::pivot_root(".", ".").map_err(setup_err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(setup_err("detach the old root"))?;
    nix::unistd::chdir("/").map_err(setup_err("chdir /"))
}

/// Joins the box's user namespace and becomes its root (an unprivileged
/// host id).
fn become_box_root(userns: &OwnedFd) -> Result<()> {
    nix::sched::setns(userns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(setup_err("join the user namespace"))?;
    nix::unistd::setgroups(&[]).map_err(setup_err("setgroups"))?;
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(setup_err("setresgid"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(setup_err("setresuid"))
}

/// The OCI default capability set, minus NET_RAW (boxes get no raw
/// sockets; see [`BOUNDING_ONLY`]): (name, capability number).
pub const DEFAULT_CAPS: [(&str, u32); 13] = [
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];

/// The default set as a capability bit mask.
pub fn default_caps_mask() -> u64 {
    DEFAULT_CAPS.iter().map(|(_, n)| 1u64 << n).sum()
}

/// Capabilities kept in the bounding set but held by no box process:
/// `CAP_NET_RAW`, because the kernel refuses to exec a file whose
/// capabilities (iputils' `ping` is `cap_net_raw+ep`) fall outside the
/// bounding set. Under `no_new_privs` the exec grants nothing, so such a
/// program runs with the caller's capabilities (`ping` then uses an ICMP
/// echo socket); and the box's network namespace belongs to the host's user
/// namespace, where box root holds no capability, so raw sockets stay
/// refused whatever a box process holds.
pub const BOUNDING_ONLY: u64 = 1 << 13;

/// The bounding set of box processes.
pub fn bounding_mask() -> u64 {
    default_caps_mask() | BOUNDING_ONLY
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn last_os(what: &'static str) -> RuntimeError {
    RuntimeError::io(what)(std::io::Error::last_os_error())
}

/// The open-file hard limit of a box (or the daemon's, if lower): box
/// processes start at [`boxd_agent::BOX_NOFILE_SOFT`] and may raise it up
/// to this. Boxes used to inherit the daemon's limits, raised for its own
/// connections.
pub const BOX_NOFILE_HARD: u64 = 524_288;

fn limit_open_files() -> Result<()> {
    boxd_agent::set_nofile(boxd_agent::BOX_NOFILE_SOFT, BOX_NOFILE_HARD)
        .map_err(RuntimeError::io("set the open-file limit"))
}

/// Reduces capabilities to the default set, sets `no_new_privs`, makes the
/// agent undumpable and installs the seccomp filters.
fn harden(seccomp: &[crate::seccomp::EncodedProgram]) -> Result<()> {
    limit_open_files()?;
    let keep = default_caps_mask();
    let bounding = bounding_mask();
    // SAFETY: prctl/capset with valid arguments on the calling thread.
    unsafe {
        for cap in 0..64u32 {
            if bounding & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
            {
                // EINVAL: past the kernel's last capability.
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(last_os("drop a bounding capability"));
            }
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
        {
            return Err(last_os("clear ambient capabilities"));
        }
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let half = |shift: u32| {
            let v = (keep >> shift) as u32;
            CapData {
                effective: v,
                permitted: v,
                inheritable: v,
            }
        };
        let data = [half(0), half(32)];
        if libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) != 0
        {
            return Err(last_os("set capabilities"));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(last_os("no_new_privs"));
        }
        // The agent cannot be ptraced or have its memory read by box processes.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    crate::seccomp::install(seccomp).map_err(|e| RuntimeError::Setup(e.to_string()))?;
    std::env::set_current_dir(boxd_agent::DEFAULT_CWD)
        .map_err(RuntimeError::io("enter /workspace/home"))
}
