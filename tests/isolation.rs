//! The isolation battery: each test fails if the protection it names is
//! missing. Runs as root; skips loudly otherwise.

mod common;
use boxd_agent::protocol::SpawnRequest;
use boxd_runtime::{BoxSpec, Limits};
use common::*;
use std::os::unix::fs::MetadataExt;

/// Runs a Python snippet in the box and returns its stdout.
async fn py(b: &TestBox, code: &str) -> String {
    let c = b
        .exec(SpawnRequest::argv(["python3", "-c", code]))
        .await
        .expect("exec python3");
    assert_eq!(
        c.status.code,
        0,
        "python failed: {}",
        String::from_utf8_lossy(&c.stderr)
    );
    String::from_utf8_lossy(&c.stdout).trim().to_string()
}

#[tokio::test]
async fn box_cannot_see_host_processes() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let pids = b.ok("ls /proc | grep -E '^[0-9]+$' | sort -n").await;
    let pids: Vec<i32> = pids.lines().filter_map(|l| l.parse().ok()).collect();
    // Only the agent (1) and the ls/grep/sort pipeline exist in the box.
    assert!(pids.contains(&1));
    assert!(
        pids.len() < 10,
        "box sees {} processes: {pids:?}",
        pids.len()
    );
    let me = std::process::id() as i32;
    let cmdline = b.ok("cat /proc/1/cmdline | tr '\\0' ' '").await;
    assert!(cmdline.contains("boxd-agent"), "PID 1 is {cmdline}");
    // The test process itself (a host process) is invisible by its host pid
    // unless that number happens to be a box pid.
    if !pids.contains(&me) {
        assert!(b.sh(&format!("test -e /proc/{me}")).await.status.code != 0);
    }
}

#[tokio::test]
async fn box_cannot_see_another_boxs_processes_or_files() {
    let Some(rt) = runtime() else { return };
    let a = TestBox::default(&rt);
    let b = TestBox::default(&rt);
    a.ok("echo top-secret > /workspace/home/a-only; echo x > /tmp/a-tmp")
        .await;
    let sleeper = a
        .spawn(SpawnRequest::argv(["sleep", "98765"]))
        .await
        .expect("spawn sleep");
    let _ = sleeper.pid;
    let ps = b
        .ok("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
        .await;
    assert!(!ps.contains("98765"), "box b sees box a's process: {ps}");
    assert_ne!(b.sh("test -e /workspace/home/a-only").await.status.code, 0);
    assert_ne!(b.sh("test -e /tmp/a-tmp").await.status.code, 0);
    assert!(a
        .ok("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        .await
        .contains("98765"));
}

#[tokio::test]
async fn writes_to_image_layers_do_not_reach_the_host() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let marker = format!("/usr/bin/boxd-marker-{}", unique("m"));
    b.ok(&format!("echo written-in-box > {marker} && cat {marker}"))
        .await;
    assert!(
        !std::path::Path::new(&marker).exists(),
        "box wrote into the host's /usr"
    );
    // Deleting a host binary inside the box hides it only there.
    b.ok("rm /usr/bin/env && ! test -e /usr/bin/env").await;
    assert!(std::path::Path::new("/usr/bin/env").exists());
    // The host's /etc is not the box's /etc.
    assert_ne!(b.sh("test -e /etc/shadow").await.status.code, 0);
    let passwd = b.ok("cat /etc/passwd").await;
    assert!(passwd.contains("box:x:1000"));
}

#[tokio::test]
async fn proc_kcore_is_masked_and_proc_sys_is_read_only() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    // Every masked file the host kernel has reads as empty in the box
    // (this kernel may lack some, e.g. /proc/kcore without CONFIG_PROC_KCORE).
    let mut checked = 0;
    for f in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/latency_stats",
    ] {
        if std::path::Path::new(f).exists() {
            assert_eq!(
                b.ok(&format!("wc -c < {f}")).await.trim(),
                "0",
                "{f} is not masked"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no masked /proc file exists on this kernel to check"
    );
    assert_eq!(b.ok("ls /sys/firmware | wc -l").await.trim(), "0");
    let mounts = b.ok("grep ' /proc/sys ' /proc/mounts").await;
    assert!(
        mounts.contains(" ro,"),
        "/proc/sys is not mounted read-only: {mounts}"
    );
    // domainname is per-UTS-namespace: only the read-only mount stops root here.
    let w = b.sh("echo evil > /proc/sys/kernel/domainname").await;
    assert_ne!(w.status.code, 0);
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("Read-only"),
        "{w:?}"
    );
    assert_ne!(b.sh("echo h > /proc/sysrq-trigger").await.status.code, 0);
    assert_ne!(b.sh("touch /sys/kernel/x").await.status.code, 0);
}

const SYSCALLS: &str = r#"
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return [r, ctypes.get_errno()]
src = ctypes.c_char_p(b"none"); dst = ctypes.c_char_p(b"/mnt"); fs = ctypes.c_char_p(b"tmpfs")
out = {
  "mount": sc(165, ctypes.cast(src, ctypes.c_void_p).value, ctypes.cast(dst, ctypes.c_void_p).value, ctypes.cast(fs, ctypes.c_void_p).value, 0, 0),
  "umount2": sc(166, ctypes.cast(dst, ctypes.c_void_p).value, 0),
  "kexec_load": sc(246, 0, 0, 0, 0),
  "bpf": sc(321, 0, 0, 0),
  "init_module": sc(175, 0, 0, 0),
  "finit_module": sc(313, 0, 0, 0),
  "delete_module": sc(176, 0, 0),
  "unshare_user": sc(272, 0x10000000),
  "unshare_net": sc(272, 0x40000000),
  "setns": sc(308, 0, 0),
  "keyctl": sc(250, 0, -3, 0),
  "add_key": sc(248, 0, 0, 0, 0, 0),
  "perf_event_open": sc(298, 0, 0, -1, -1, 0),
  "userfaultfd": sc(323, 0),
  "open_by_handle_at": sc(304, 0, 0, 0),
  "io_uring_setup": sc(425, 1, 0),
  "pivot_root": sc(155, 0, 0),
  "personality": sc(135, 0x0040000),
  "clone3": sc(435, 0, 0),
  "ptrace_agent": sc(101, 16, 1, 0, 0),
  # The x32 ABI (bit 30 in the number): refused whatever the call, so a
  # kernel with x32 enabled does not open unshare/mount/keyctl/io_uring
  # around the deny-list (a kernel without x32 would answer ENOSYS).
  "x32_unshare_user": sc(0x40000000 | 272, 0x10000000),
  "x32_mount": sc(0x40000000 | 165, 0, 0, 0, 0, 0),
  "x32_keyctl": sc(0x40000000 | 250, 0, -3, 0),
  "x32_io_uring_setup": sc(0x40000000 | 425, 1, 0),
  "x32_getpid": sc(0x40000000 | 39),
}
print(json.dumps(out))
"#;

#[tokio::test]
async fn privileged_syscalls_are_refused() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let out: serde_json::Value = serde_json::from_str(&py(&b, SYSCALLS).await).expect("json");
    let eperm = libc::EPERM as i64;
    for (name, res) in out.as_object().expect("object") {
        let (ret, errno) = (res[0].as_i64().unwrap(), res[1].as_i64().unwrap());
        assert_eq!(ret, -1, "{name} succeeded inside the box");
        let expected = if name == "clone3" {
            libc::ENOSYS as i64
        } else {
            eperm
        };
        assert_eq!(
            errno, expected,
            "{name} failed with errno {errno}, not by the filter/caps"
        );
    }
    // And with a real tool: new user namespaces and mounts are refused.
    assert_ne!(b.sh("unshare -U true").await.status.code, 0);
    assert_ne!(b.sh("mount -t tmpfs none /mnt").await.status.code, 0);
}

/// Calls getpid through the i386 entry point (`int 0x80`) from machine code
/// in an executable mapping; prints "survived" if the call came back.
const INT80: &str = r#"
import ctypes, mmap
code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20 (getpid); int 0x80; ret
m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
print("survived")
"#;

#[tokio::test]
async fn the_i386_entry_point_is_refused() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let c = b
        .exec(SpawnRequest::argv(["python3", "-c", INT80]))
        .await
        .expect("exec python3");
    assert!(
        !String::from_utf8_lossy(&c.stdout).contains("survived"),
        "an int 0x80 system call came back inside the box: {c:?}"
    );
    assert_eq!(c.status.signal, Some(libc::SIGSYS), "{c:?}");
}

#[tokio::test]
async fn a_box_process_cannot_make_the_agent_exit() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    // PID 1 ignores what it has no handler for; the agent's termination
    // signals must not be taken from inside the box either.
    b.ok("kill -TERM 1; kill -INT 1; kill -HUP 1; kill -USR1 1; echo sent")
        .await;
    assert_eq!(b.ok("echo alive").await.trim(), "alive");
    let handle = b.handle.as_ref().expect("handle");
    assert!(handle.is_alive(), "the agent exited on a box's signal");
    // The host still can end it: SIGTERM from outside the box's pid
    // namespace is obeyed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(handle.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal the agent from the host");
    let mut waited = 0;
    while handle.is_alive() && waited < 1000 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert!(
        !handle.is_alive(),
        "the host's SIGTERM did not end the agent"
    );
}

#[tokio::test]
async fn ping_works_inside_the_box_without_raw_sockets() {
    let Some(rt) = runtime() else { return };
    if !std::path::Path::new("/usr/bin/ping").exists() {
        skip("ping (Debian iputils-ping) is not installed; scripts/test installs it");
        return;
    }
    let b = TestBox::default(&rt);
    // As box root and as the unprivileged box user: ICMP echo sockets,
    // not CAP_NET_RAW (raw sockets stay refused).
    for user in ["root", "boxuser"] {
        let mut req = SpawnRequest::argv(["ping", "-c", "2", "-W", "5", "127.0.0.1"]);
        req.user = Some(user.to_string());
        let c = b.exec(req).await.expect("exec ping");
        assert_eq!(
            c.status.code,
            0,
            "ping as {user}: {}{}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        );
    }
    let raw = b
        .sh("python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'")
        .await;
    assert_ne!(raw.status.code, 0, "a raw socket was made: {raw:?}");
}

#[tokio::test]
async fn boxes_get_their_own_open_file_limit_not_the_daemons() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let limits = b.ok("ulimit -Sn; ulimit -Hn").await;
    let mut it = limits.split_whitespace();
    let soft: u64 = it.next().and_then(|v| v.parse().ok()).expect("soft limit");
    let hard: u64 = it.next().and_then(|v| v.parse().ok()).expect("hard limit");
    assert_eq!(soft, boxd_agent::BOX_NOFILE_SOFT, "{limits}");
    assert!(hard <= boxd_runtime::setup::BOX_NOFILE_HARD, "{limits}");
    // The process itself may raise its soft limit up to the hard one.
    let raised = b.ok(&format!("ulimit -Sn {hard} && ulimit -Sn")).await;
    assert_eq!(raised.trim(), hard.to_string());
    // The agent, which holds the descriptors of every command, runs at the
    // hard limit.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", b.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let agent: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(agent, [hard.to_string(), hard.to_string()], "{line}");
}

#[tokio::test]
async fn each_box_has_a_boot_id_of_its_own() {
    let Some(rt) = runtime() else { return };
    let host = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("host boot id");
    let (a, b) = (TestBox::default(&rt), TestBox::default(&rt));
    let read = "cat /proc/sys/kernel/random/boot_id";
    let first = a.ok(read).await;
    assert_ne!(first.trim(), host.trim(), "the box sees the host's boot id");
    assert_eq!(first.trim().len(), 36, "{first}");
    assert_eq!(
        a.ok(read).await,
        first,
        "the boot id changed within one start"
    );
    assert_ne!(b.ok(read).await, first, "two boxes share a boot id");
    let w = a
        .sh("echo 00000000-0000-4000-8000-000000000000 > /proc/sys/kernel/random/boot_id")
        .await;
    assert_ne!(w.status.code, 0, "the box rewrote its boot id");
}

#[tokio::test]
async fn capabilities_are_the_reduced_default_set_and_no_new_privs_is_set() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let status = b
        .ok("grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status")
        .await;
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    let bnd = u64::from_str_radix(&field("CapBnd:"), 16).unwrap();
    let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    assert_eq!(bnd, boxd_runtime::setup::bounding_mask(), "bounding set");
    assert_eq!(
        eff,
        boxd_runtime::setup::default_caps_mask(),
        "effective set"
    );
    assert_eq!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN kept");
    // NET_RAW only bounds what an exec may grant (nothing, under
    // no_new_privs): no box process holds it.
    assert_eq!(eff & (1 << 13), 0, "CAP_NET_RAW held");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
}

#[tokio::test]
async fn box_root_is_an_unprivileged_host_uid() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    b.ok("echo mine > /workspace/home/owned && id -u").await;
    let upper = rt
        .dir
        .join("pool/boxes")
        .join(b.id())
        .join("upper-0/workspace/home/owned");
    let md = std::fs::metadata(&upper).expect("file in the box's upper dir");
    assert_eq!(md.uid(), b.host_root_id());
    assert_eq!(md.gid(), b.host_root_id());
    assert!(b.host_root_id() >= boxd_runtime::idmap::FIRST_HOST_ID);
    // The agent itself runs as that uid on the host.
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == b.host_root_id().to_string()),
        "{uid_line}"
    );
    // Image files look root-owned inside (id-mapped layers), not nobody.
    assert_eq!(b.ok("stat -c %u:%g /usr/bin/env").await.trim(), "0:0");
    // The unprivileged box user really is unprivileged inside.
    let c = b
        .exec(SpawnRequest {
            user: Some("box".into()),
            ..SpawnRequest::shell("id -u; touch /etc/nope")
        })
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&c.stdout).trim(), "1000");
    assert_ne!(c.status.code, 0);
}

#[tokio::test]
async fn no_daemon_descriptor_reaches_the_box() {
    let Some(rt) = runtime() else { return };
    // A descriptor the "daemon" holds open while the box starts.
    let marker = std::fs::File::open("/etc/hostname").unwrap();
    let b = TestBox::default(&rt);
    let fds = py(
        &b,
        "import os; print(sorted(int(x) for x in os.listdir('/proc/self/fd')))",
    )
    .await;
    assert_eq!(
        fds, "[0, 1, 2, 3]",
        "unexpected descriptors in a box process"
    );
    let links = b.ok("ls -l /proc/self/fd/ 2>&1").await;
    assert!(!links.contains("hostname"), "{links}");
    drop(marker);
}

#[tokio::test]
async fn the_agent_control_socket_is_unreachable_from_the_box() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    let host_path = b.agent().socket().display().to_string();
    // On the host, only root may enter the box's directory (and its socket).
    let box_dir = b.agent().socket().parent().unwrap();
    assert_eq!(
        std::fs::metadata(box_dir).unwrap().mode() & 0o077,
        0,
        "box dir open to other host users"
    );
    assert_ne!(b.sh(&format!("test -e {host_path}")).await.status.code, 0);
    // PID 1 is not dumpable: its descriptors and memory are closed to box root.
    let c = b.sh("ls /proc/1/fd").await;
    assert_ne!(c.status.code, 0, "box root can list the agent's fds");
    assert_ne!(b.sh("head -c1 /proc/1/mem").await.status.code, 0);
    // The listener lives in the host's network namespace: the box's view
    // of unix sockets has no path-bound socket at all.
    let sockets = b.ok("tail -n +2 /proc/net/unix | awk 'NF >= 8'").await;
    assert_eq!(sockets.trim(), "", "the box sees bound unix sockets");
}

#[tokio::test]
async fn blocked_env_vars_are_refused_with_their_name() {
    let Some(rt) = runtime() else { return };
    for name in boxd_runtime::env::BLOCKED_ENV {
        let mut spec = BoxSpec::new(unique("env"));
        spec.env.insert(name.into(), "/evil".into());
        let err = rt
            .create(&spec)
            .err()
            .expect("create with a blocked env var");
        assert!(err.to_string().contains(name), "{err}");
    }
    let b = TestBox::default(&rt);
    let mut req = SpawnRequest::shell("true");
    req.env.insert("LD_PRELOAD".into(), "/tmp/x.so".into());
    let err = b.exec(req).await.expect_err("exec with LD_PRELOAD");
    assert!(err.to_string().contains("LD_PRELOAD"));
    // Nothing was left behind by the refused creates.
    assert_eq!(rt.box_records().len(), 1);
}

#[tokio::test]
async fn a_fork_bomb_stops_at_pids_max_and_the_next_box_starts() {
    let Some(rt) = runtime() else { return };
    let mut spec = BoxSpec::new(unique("bomb"));
    spec.limits = Limits {
        pids: Some(64),
        ..Limits::default()
    };
    let b = TestBox::new(&rt, spec);
    let mut req = SpawnRequest::shell("bomb() { bomb | bomb & }; bomb; sleep 2");
    req.timeout_ms = Some(3000);
    let _ = b.exec(req).await;
    let v1 = b.cgroup().v1.as_ref().map(|v| v.pids.clone());
    let dir = v1.or_else(|| b.cgroup().v2.clone()).unwrap();
    let events = std::fs::read_to_string(dir.join("pids.events")).unwrap();
    let hits: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(hits > 0, "the bomb never hit pids.max: {events}");
    let current: u64 = std::fs::read_to_string(dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(current <= 64, "{current} pids in the box");
    b.destroy();
    let next = TestBox::default(&rt);
    assert_eq!(next.ok("echo alive").await.trim(), "alive");
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_inside_its_box() {
    let Some(rt) = runtime() else { return };
    let mut spec = BoxSpec::new(unique("hog"));
    spec.limits = Limits {
        memory_bytes: Some(96 << 20),
        ..Limits::default()
    };
    let b = TestBox::new(&rt, spec);
    // No swap beyond the limit: memory + swap is capped at the limit (v1),
    // or swap at zero (v2).
    let cg = b.handle.as_ref().expect("handle").cgroup();
    let swap = match (&cg.v1, &cg.v2) {
        (Some(v1), _) => Some((v1.memory.join("memory.memsw.limit_in_bytes"), 96u64 << 20)),
        (None, Some(v2)) => Some((v2.join("memory.swap.max"), 0)),
        (None, None) => None,
    };
    match swap {
        Some((file, want)) if file.exists() => {
            let got = std::fs::read_to_string(&file).expect("read the swap limit");
            assert_eq!(got.trim(), want.to_string(), "{}", file.display());
        }
        _ => skip("this kernel has no swap accounting; the swap limit is not checked"),
    }
    let c = b
        .exec(SpawnRequest::argv([
            "python3",
            "-c",
            "x = b'x' * (1024 << 20); print(len(x))",
        ]))
        .await
        .unwrap();
    assert_eq!(c.status.signal, Some(9), "hog was not OOM-killed: {c:?}");
    // The box (and its agent) survive the OOM kill.
    assert!(b.is_alive());
    assert_eq!(b.ok("echo still-here").await.trim(), "still-here");
}

#[tokio::test]
async fn hostname_is_the_box_id_and_the_network_is_loopback_only() {
    let Some(rt) = runtime() else { return };
    let b = TestBox::default(&rt);
    assert_eq!(b.ok("hostname").await.trim(), b.id());
    let links = b
        .ok("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
        .await;
    assert_eq!(links.trim(), "lo");
    assert_eq!(
        py(&b, "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.create_connection(s.getsockname()); print('ok')").await,
        "ok"
    );
}

#[tokio::test]
async fn trust_bundle_is_mounted_read_only_over_the_system_bundles() {
    let Some(rt) = runtime() else { return };
    let bundle = rt.dir.join("trust-bundle.pem");
    let pem = "-----BEGIN CERTIFICATE-----\nboxd-test-bundle\n-----END CERTIFICATE-----\n";
    std::fs::write(&bundle, pem).unwrap();
    let mut spec = BoxSpec::new(unique("trust"));
    spec.trust = Some(boxd_runtime::TrustBundle {
        file: bundle.clone(),
        // The first path is created when the image lacks it; the others
        // only replace files that exist.
        paths: vec![
            "/etc/boxd-test/certs/bundle.pem".into(),
            "/etc/ssl/certs/ca-certificates.crt".into(),
            "/etc/pki/tls/certs/ca-bundle.crt".into(),
        ],
    });
    let b = TestBox::new(&rt, spec);
    assert_eq!(b.ok("cat /etc/boxd-test/certs/bundle.pem").await, pem);
    if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        assert_eq!(b.ok("cat /etc/ssl/certs/ca-certificates.crt").await, pem);
    }
    assert_ne!(
        b.sh("test -e /etc/pki/tls/certs/ca-bundle.crt")
            .await
            .status
            .code,
        0
    );
    // Box root can neither write, replace nor unmount it.
    for cmd in [
        "echo evil > /etc/boxd-test/certs/bundle.pem",
        "rm -f /etc/boxd-test/certs/bundle.pem",
        "umount /etc/boxd-test/certs/bundle.pem",
        "mv /etc/boxd-test/certs/bundle.pem /tmp/x",
    ] {
        assert_ne!(b.sh(cmd).await.status.code, 0, "{cmd} succeeded");
    }
    assert_eq!(b.ok("cat /etc/boxd-test/certs/bundle.pem").await, pem);
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), pem);
    b.destroy();
}
