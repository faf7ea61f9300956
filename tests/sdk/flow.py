"""The Upstash Box flow through the official Python SDK (`upstash-box`), run
once with the sync client (`Box`) and once with the async client (`AsyncBox`),
against the server named by UPSTASH_BOX_BASE_URL / UPSTASH_BOX_API_KEY.

Run by tests/sdk_compat.rs with target/sdk/py/bin/python (installed by
.ci/install-sdks). Every check prints one line; the first mismatch raises
with the expected and the actual value, and the script exits nonzero. The
whole run is bounded by an alarm (FLOW_TIMEOUT_SECS, default 300 s), and every
SDK request by its own timeout.

The expected wire behaviour is docs/UPSTASH_API.md (§2, §3.1, §5).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, List, Optional

import upstash_box
from upstash_box import AsyncBox, Box, BoxError

WORKSPACE = "/workspace/home"
# Per-request timeout given to the SDK, in ms (the SDK's default is 600 s).
REQUEST_TIMEOUT_MS = 60_000
# The box statuses after which a box is usable (docs/UPSTASH_API.md §6).
READY_STATUSES = ("idle", "running")


class CheckFailed(AssertionError):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


def check(what: str, expected: Any, actual: Any) -> None:
    if expected != actual:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")
    log(f"  ok  {what}: {actual!r}")


def check_true(what: str, cond: bool, detail: Any) -> None:
    if not cond:
        raise CheckFailed(f"{what}: not true; actual: {detail!r}")
    log(f"  ok  {what}")


async def maybe(value: Any) -> Any:
    """Awaits what the async client returns; passes the sync client's values."""
    if inspect.isawaitable(value):
        return await value
    return value


async def expect_box_error(what: str, fn: Callable[[], Any]) -> BoxError:
    try:
        await maybe(fn())
    except BoxError as e:
        log(f"  ok  {what}: BoxError(status={e.status_code}, {e.message!r})")
        return e
    raise CheckFailed(f"{what}: expected a BoxError, but the call succeeded")


async def collect_stream(run: Any) -> List[tuple]:
    """(seconds since start, chunk) for every chunk of an exec stream."""
    start = time.monotonic()
    out = []
    if hasattr(run, "__aiter__"):
        async for chunk in run:
            out.append((time.monotonic() - start, chunk))
    else:
        for chunk in run:
            out.append((time.monotonic() - start, chunk))
    return out


def describe_chunks(chunks: List[tuple]) -> str:
    return ", ".join(f"{t:.2f}s {c!r}" for t, c in chunks)


async def flow(kind: str, cls: Any, workdir: str) -> None:
    """The whole flow with `cls` (Box or AsyncBox)."""
    tag = secrets.token_hex(4)
    name = f"sdk-py-{kind}-{os.getpid()}-{tag}"
    # labels: [A-Za-z0-9._:-], at most 20 chars; the ':' is sent as %3A
    label = f"sdk:{tag}"
    created: List[Any] = []
    deleted: List[str] = []
    log(f"[{kind}] create box {name!r} with label {label!r}")
    try:
        box = await maybe(
            cls.create(
                name=name,
                labels=[label],
                env={"SDK_FLOW_VAR": "hello-env"},
                timeout=REQUEST_TIMEOUT_MS,
            )
        )
        created.append(box)
        check_true("create: box has an id", isinstance(box.id, str) and box.id != "", box.id)
        check("create: the box starts in the workspace", WORKSPACE, box.cwd)
        other = await maybe(cls.create(name=f"{name}-other", timeout=REQUEST_TIMEOUT_MS))
        created.append(other)
        check_true("create: a second box (no label) has another id", other.id != box.id, other.id)

        # ---------------- exec ----------------
        log(f"[{kind}] exec")
        run = await maybe(box.exec.command('echo "$SDK_FLOW_VAR"; echo to-stderr >&2'))
        check("exec: stdout (env var from create)", "hello-env\n", run.stdout)
        check("exec: stderr kept apart from stdout", "to-stderr\n", run.stderr)
        check("exec: exit code", 0, run.exit_code)
        check("exec: status", "completed", run.status)
        check("exec: result is stdout on success", "hello-env\n", run.result)
        run = await maybe(box.exec.command("pwd"))
        check("exec: default working directory", f"{WORKSPACE}\n", run.stdout)
        run = await maybe(box.exec.command("echo out; echo err >&2; exit 7"))
        check("exec nonzero: exit code", 7, run.exit_code)
        check("exec nonzero: status", "failed", run.status)
        check("exec nonzero: stdout", "out\n", run.stdout)
        check("exec nonzero: stderr", "err\n", run.stderr)
        check("exec nonzero: result is stderr on failure", "err\n", run.result)

        # ---------------- exec stream ----------------
        log(f"[{kind}] exec stream")
        stream = await maybe(box.exec.stream("echo first; sleep 1; echo second >&2; exit 3"))
        chunks = await collect_stream(stream)
        log(f"      chunks: {describe_chunks(chunks)}")
        outputs = [(t, c) for t, c in chunks if getattr(c, "type", None) == "output"]
        exits = [(t, c) for t, c in chunks if getattr(c, "type", None) == "exit"]
        check("stream: concatenated output (stdout and stderr)", "first\nsecond\n",
              "".join(c.data for _, c in outputs))
        check("stream: number of exit chunks", 1, len(exits))
        check("stream: the exit chunk comes last", "exit", chunks[-1][1].type)
        check("stream: exit code from the trailer", 3, exits[0][1].exit_code)
        check_true("stream: cpu_ns is an int", isinstance(exits[0][1].cpu_ns, int), exits[0][1])
        first_at = next((t for t, c in outputs if "first" in c.data), None)
        check_true(
            "stream: 'first' arrived while the command was still running (>=0.5 s before exit)",
            first_at is not None and exits[0][0] - first_at >= 0.5,
            describe_chunks(chunks),
        )
        check("stream: run status", "failed", stream.status)
        check("stream: run exit code", 3, stream.exit_code)
        check("stream: run result", "first\nsecond\n", stream.result)
        stream = await maybe(box.exec.stream("echo streamed-ok"))
        chunks = await collect_stream(stream)
        check("stream ok: chunk types", ["output", "exit"], [c.type for _, c in chunks])
        check("stream ok: output", "streamed-ok\n", chunks[0][1].data)
        check("stream ok: exit code", 0, chunks[1][1].exit_code)
        check("stream ok: run status", "completed", stream.status)

        # ---------------- cd ----------------
        log(f"[{kind}] cd")
        run = await maybe(box.exec.command("mkdir -p sub/dir && echo inside > sub/dir/here.txt"))
        check("cd: mkdir exit code", 0, run.exit_code)
        await maybe(box.cd("sub/dir"))
        check("cd: cwd after cd", f"{WORKSPACE}/sub/dir", box.cwd)
        run = await maybe(box.exec.command("pwd; cat here.txt"))
        check("cd: exec runs in the folder", f"{WORKSPACE}/sub/dir\ninside\n", run.stdout)
        stream = await maybe(box.exec.stream("pwd"))
        chunks = await collect_stream(stream)
        check("cd: exec stream runs in the folder", f"{WORKSPACE}/sub/dir\n",
              "".join(c.data for _, c in chunks if c.type == "output"))
        check("cd: file read relative to the folder", "inside\n",
              await maybe(box.files.read("here.txt")))
        names = sorted(e.name for e in await maybe(box.files.list()))
        check("cd: files.list() lists the folder", ["here.txt"], names)
        await expect_box_error("cd: into a missing folder fails", lambda: box.cd("no-such-dir"))
        check("cd: cwd unchanged after a failed cd", f"{WORKSPACE}/sub/dir", box.cwd)
        await maybe(box.cd("/tmp"))
        run = await maybe(box.exec.command("pwd"))
        check("cd: absolute folder outside the workspace", "/tmp\n", run.stdout)
        await maybe(box.cd(WORKSPACE))
        check("cd: back to the workspace", WORKSPACE, box.cwd)

        # ---------------- files ----------------
        log(f"[{kind}] files")
        text = "hello from the python sdk\nünïcödé ✓\n"
        await maybe(box.files.write(path="hello.txt", content=text))
        check("files: read back what was written", text, await maybe(box.files.read("hello.txt")))
        check("files: read by absolute path", text,
              await maybe(box.files.read(f"{WORKSPACE}/hello.txt")))
        check("files: read by an unnormalized path (./sub/../hello.txt)", text,
              await maybe(box.files.read("./sub/../hello.txt")))
        run = await maybe(box.exec.command("cat hello.txt"))
        check("files: the written file is visible to exec", text, run.stdout)
        raw = bytes([0, 1, 2, 250, 255]) + b"binary"
        b64 = base64.b64encode(raw).decode()
        await maybe(box.files.write(path="bin.dat", content=b64, encoding="base64"))
        check("files: base64 read of a base64 write", b64,
              await maybe(box.files.read("bin.dat", encoding="base64")))
        run = await maybe(box.exec.command("od -An -tx1 bin.dat | tr -d ' \\n'"))
        check("files: base64 write stored the raw bytes", raw.hex(), run.stdout)
        entries = {e.name: e for e in await maybe(box.files.list())}
        check_true("files: list() has hello.txt", "hello.txt" in entries, sorted(entries))
        e = entries["hello.txt"]
        check("files: entry path", f"{WORKSPACE}/hello.txt", e.path)
        check("files: entry size", len(text.encode()), e.size)
        check("files: entry is_dir", False, e.is_dir)
        check_true("files: entry mod_time is a string", isinstance(e.mod_time, str), e.mod_time)
        check_true("files: list() has the folder sub", "sub" in entries, sorted(entries))
        check("files: folder entry is_dir", True, entries["sub"].is_dir)
        sub = sorted(e.name for e in await maybe(box.files.list("sub")))
        check("files: list('sub')", ["dir"], sub)

        st = await maybe(box.files.stat("hello.txt"))
        check("stat: type", "file", st.type)
        check("stat: size", len(text.encode()), st.size)
        check_true("stat: inode", isinstance(st.inode, int) and st.inode > 0, st.inode)
        check_true("stat: version is a token", isinstance(st.version, str) and st.version != "",
                   st.version)
        check("stat: a folder", "directory", (await maybe(box.files.stat("sub"))).type)
        await maybe(box.exec.command("ln -sf hello.txt link.txt"))
        check("stat: a symlink (lstat by default)", "symlink",
              (await maybe(box.files.stat("link.txt"))).type)
        check("stat: follow=True", "file",
              (await maybe(box.files.stat("link.txt", follow=True))).type)
        await expect_box_error("stat: a missing path fails", lambda: box.files.stat("missing.txt"))
        await maybe(box.files.write(path="hello.txt", content=text + "more\n"))
        st2 = await maybe(box.files.stat("hello.txt"))
        check_true("stat: version changes when the file changes", st2.version != st.version,
                   (st.version, st2.version))

        await maybe(box.files.mkdir("d1/d2", parents=True))
        check("mkdir: parents=True", "directory", (await maybe(box.files.stat("d1/d2"))).type)
        await expect_box_error("mkdir: parents=False under a missing parent fails",
                               lambda: box.files.mkdir("nope/deeper"))
        await maybe(box.files.rename("hello.txt", "d1/renamed.txt"))
        check("rename: the new path has the content", text + "more\n",
              await maybe(box.files.read("d1/renamed.txt")))
        await expect_box_error("rename: the old path is gone",
                               lambda: box.files.read("hello.txt"))
        await expect_box_error("remove: a folder without recursive fails",
                               lambda: box.files.remove("d1"))
        await maybe(box.files.remove("d1", recursive=True))
        await expect_box_error("remove: recursive removed the folder",
                               lambda: box.files.stat("d1"))
        await maybe(box.files.remove("bin.dat"))
        await expect_box_error("remove: a file", lambda: box.files.stat("bin.dat"))

        # ---------------- upload / download ----------------
        log(f"[{kind}] upload / download")
        local_bin = os.path.join(workdir, f"local-{kind}.bin")
        local_txt = os.path.join(workdir, f"local-{kind}.txt")
        bin_content = bytes(range(256)) * 4
        txt_content = b"uploaded text\n"
        with open(local_bin, "wb") as f:
            f.write(bin_content)
        with open(local_txt, "wb") as f:
            f.write(txt_content)
        await maybe(box.files.upload([
            {"path": local_bin, "destination": "updir/blob.bin"},
            {"path": local_txt, "destination": "updir/note.txt"},
        ]))
        run = await maybe(box.exec.command("cat updir/note.txt; wc -c < updir/blob.bin"))
        check("upload: both files landed at their destinations (parents created)",
              "uploaded text\n1024\n", run.stdout)
        run = await maybe(box.exec.command("sha256sum < updir/blob.bin | cut -d' ' -f1"))
        check("upload: binary bytes intact", hashlib.sha256(bin_content).hexdigest() + "\n",
              run.stdout)
        dl_dir = os.path.join(workdir, "updir")
        shutil.rmtree(dl_dir, ignore_errors=True)
        await maybe(box.files.download(folder="updir"))  # into ./updir (cwd is workdir)
        check("download: files in ./updir", ["blob.bin", "note.txt"], sorted(os.listdir(dl_dir)))
        with open(os.path.join(dl_dir, "blob.bin"), "rb") as f:
            check_true("download: binary file bytes equal", f.read() == bin_content, "differs")
        with open(os.path.join(dl_dir, "note.txt"), "rb") as f:
            check("download: text file bytes", txt_content, f.read())

        # ---------------- list / get / status ----------------
        log(f"[{kind}] list, get, status")
        listed = await maybe(cls.list(label=label))
        ids = [b.id for b in listed]
        check_true("list(label): the labelled box is found", box.id in ids, ids)
        check_true("list(label): the box without the label is not", other.id not in ids, ids)
        mine = next(b for b in listed if b.id == box.id)
        check("list(label): name", name, mine.name)
        check_true("list(label): labels contain the label", label in (mine.labels or []),
                   mine.labels)
        all_ids = [b.id for b in await maybe(cls.list())]
        check_true("list(): both boxes", box.id in all_ids and other.id in all_ids, all_ids)
        by_name = await maybe(cls.get_by_name(name, timeout=REQUEST_TIMEOUT_MS))
        try:
            check("get_by_name: same id", box.id, by_name.id)
            run = await maybe(by_name.exec.command("echo via-name"))
            check("get_by_name: the handle works", "via-name\n", run.stdout)
        finally:
            await close(by_name)
        by_id = await maybe(cls.get(box.id, timeout=REQUEST_TIMEOUT_MS))
        try:
            check("get(id): same id", box.id, by_id.id)
        finally:
            await close(by_id)
        status = await maybe(box.get_status())
        check_true("get_status: {status: <ready status>}",
                   isinstance(status, dict) and status.get("status") in READY_STATUSES, status)

        # ---------------- snapshots ----------------
        log(f"[{kind}] snapshots")
        await maybe(box.exec.command("mkdir -p snapdir && echo snapped > snapdir/f"))
        snap = await maybe(box.snapshot(name=f"{name}-snap"))
        check("snapshot: status", "ready", snap.status)
        check("snapshot: box_id", box.id, snap.box_id)
        check_true("snapshot: size reported", snap.size_bytes > 0, snap.size_bytes)
        listed_snaps = await maybe(box.list_snapshots())
        check_true("list_snapshots: the snapshot is listed",
                   snap.id in [s.id for s in listed_snaps], listed_snaps)
        restored = await maybe(cls.from_snapshot(snap.id, timeout=REQUEST_TIMEOUT_MS))
        created.append(restored)
        run = await maybe(restored.exec.command('cat snapdir/f; echo "$SDK_FLOW_VAR"'))
        check("from_snapshot: files and env of the snapshot", "snapped\nhello-env\n", run.stdout)
        await maybe(restored.delete())
        deleted.append(restored.id)
        await maybe(box.delete_snapshot(snap.id))
        listed_snaps = await maybe(box.list_snapshots())
        check_true("delete_snapshot: gone from the list",
                   snap.id not in [s.id for s in listed_snaps], listed_snaps)
        snap2 = await maybe(box.snapshot(name=f"{name}-snap2"))
        bulk = await maybe(cls.delete_snapshots(snapshot_ids=[snap2.id]))
        check("delete_snapshots: count", 1, bulk.get("deleted") if isinstance(bulk, dict) else bulk)
        # ---------------- pause / resume ----------------
        log(f"[{kind}] pause / resume")
        await maybe(box.pause())
        check("pause: status paused", "paused", (await maybe(box.get_status()))["status"])
        await maybe(box.pause())
        check("pause twice: still paused", "paused", (await maybe(box.get_status()))["status"])
        run = await maybe(box.exec.command("echo after-pause"))
        check("exec on a paused box resumes it", "after-pause\n", run.stdout)
        check("exec resumed: status idle", "idle",
              (await maybe(box.get_status()))["status"])
        await maybe(box.pause())
        await maybe(box.resume())
        check("resume: status idle", "idle", (await maybe(box.get_status()))["status"])
        await maybe(box.resume())
        check("resume twice: still idle", "idle", (await maybe(box.get_status()))["status"])

        # ---------------- agent configuration ----------------
        log(f"[{kind}] agent configuration")
        agent_key = "sk-flow-" + secrets.token_hex(12)
        agent_box = await maybe(
            cls.create(
                agent={"harness": "claude-code", "model": "anthropic/claude-sonnet-4-5",
                       "api_key": agent_key},
                skills=["upstash/qstash-js"],
                mcp_servers=[
                    {"name": "fs", "package": "@modelcontextprotocol/server-filesystem",
                     "args": ["/workspace/home"]},
                    {"name": "web", "url": "https://mcp.example.com/sse",
                     "headers": {"Authorization": "Bearer " + agent_key}},
                ],
                timeout=REQUEST_TIMEOUT_MS,
            )
        )
        created.append(agent_box)
        check("agent: model_config",
              {"harness": "claude-code", "model": "anthropic/claude-sonnet-4-5"},
              agent_box.model_config)
        check("agent: skills.list()", ["upstash/qstash-js"], await maybe(agent_box.skills.list()))
        await maybe(agent_box.skills.add("upstash/workflow-js/workflow"))
        check("agent: skills.add", ["upstash/qstash-js", "upstash/workflow-js/workflow"],
              await maybe(agent_box.skills.list()))
        await maybe(agent_box.skills.remove("upstash/workflow-js/workflow"))
        check("agent: skills.remove", ["upstash/qstash-js"], await maybe(agent_box.skills.list()))
        await maybe(agent_box.configure_model("anthropic/claude-opus-4-5"))
        again = await maybe(cls.get(agent_box.id, timeout=REQUEST_TIMEOUT_MS))
        created.append(again)
        check("agent: configure_model, read back by get", "anthropic/claude-opus-4-5",
              again.model_config["model"])
        run = await maybe(agent_box.exec.command("env; cat /proc/*/environ 2>/dev/null"))
        check_true("agent: the key is not in the box's env", agent_key not in run.stdout, "present")
        listed_all = await maybe(cls.list())
        check_true("agent: the key is in no list answer",
                   agent_key not in repr([b.model_dump() for b in listed_all]), "present")
        e = await expect_box_error("agent.run: runs are not built yet",
                                   lambda: again.agent.run(prompt="hi"))
        check("agent.run: status code", 501, e.status_code)
        custom_box = await maybe(
            cls.create(
                agent={"harness": "custom",
                       "custom_harness": {"command": "my-agent", "args": ["--fast"]}},
                timeout=REQUEST_TIMEOUT_MS,
            )
        )
        created.append(custom_box)
        check("custom harness: default model", "custom", custom_box.model_config["model"])
        await maybe(custom_box.configure_custom_harness(
            {"command": "/home/boxuser/agent", "protocol": "box-sse-v1"}))
        log("  ok  custom harness: configure_custom_harness")
        e = await expect_box_error(
            "an unknown harness is refused",
            lambda: cls.create(agent={"harness": "gpt-cli", "model": "m"},
                               timeout=REQUEST_TIMEOUT_MS),
        )
        check("unknown harness: status code", 400, e.status_code)
        check_true("unknown harness: the harnesses are named", "claude-code" in e.message,
                   e.message)
        for b in (agent_box, custom_box):
            await maybe(b.delete())
            deleted.append(b.id)

        # ---------------- errors ----------------
        log(f"[{kind}] errors")
        e = await expect_box_error(
            "a wrong API key is refused",
            lambda: cls.list(api_key="wrong-" + secrets.token_hex(24)),
        )
        check_true("wrong API key: 401 or 403", e.status_code in (401, 403), e.status_code)
        e = await expect_box_error("get of an unknown box fails",
                                   lambda: cls.get(f"no-such-box-{tag}", timeout=REQUEST_TIMEOUT_MS))
        check("unknown box: status code", 404, e.status_code)
        check_true("unknown box: the body has an error message",
                   not e.message.startswith("Request failed with status"), e.message)

        # ---------------- delete ----------------
        log(f"[{kind}] delete")
        await maybe(box.delete())
        deleted.append(box.id)
        log(f"  ok  delete: box.delete() ({box.id})")
        await maybe(cls.delete_boxes(box_ids=[other.id]))
        deleted.append(other.id)
        log(f"  ok  delete: bulk delete_boxes(box_ids=[...]) ({other.id})")
        e = await expect_box_error("get of the bulk-deleted box fails",
                                   lambda: cls.get(other.id, timeout=REQUEST_TIMEOUT_MS))
        check("get of the bulk-deleted box: status code", 404, e.status_code)
        e = await expect_box_error("get after delete fails",
                                   lambda: cls.get(box.id, timeout=REQUEST_TIMEOUT_MS))
        check("get after delete: status code", 404, e.status_code)
        ids = [b.id for b in await maybe(cls.list(label=label))]
        check("list(label) after delete", [], ids)
        log(f"[{kind}] PASS")
    finally:
        for b in created:
            if b.id not in deleted:
                try:
                    await maybe(b.delete())
                    log(f"  (cleanup: deleted box {b.id})")
                except Exception as e:  # noqa: BLE001 - best effort
                    log(f"  (cleanup: deleting box {b.id} failed: {e})")
            await close(b)


async def close(b: Any) -> None:
    closer = getattr(b, "aclose", None) or getattr(b, "close", None)
    if closer is not None:
        try:
            await maybe(closer())
        except Exception:  # noqa: BLE001 - already closed
            pass


def on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutError("flow.py: the whole run took longer than its bound")


def main() -> int:
    for var in ("UPSTASH_BOX_BASE_URL", "UPSTASH_BOX_API_KEY"):
        if not os.environ.get(var):
            print(f"flow.py: {var} is not set", file=sys.stderr)
            return 2
    bound = int(os.environ.get("FLOW_TIMEOUT_SECS", "300"))
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(bound)
    log(f"upstash-box {upstash_box.__version__} (python {sys.version.split()[0]}) "
        f"against {os.environ['UPSTASH_BOX_BASE_URL']}, bound {bound}s")
    workdir = tempfile.mkdtemp(prefix="boxd-sdk-py-")
    old_cwd = os.getcwd()
    os.chdir(workdir)  # files.download writes into ./<folder>
    failed: Optional[str] = None
    try:
        for kind, cls in (("sync", Box), ("async", AsyncBox)):
            try:
                asyncio.run(flow(kind, cls, workdir))
            except BaseException as e:  # noqa: BLE001 - report, then fail
                traceback.print_exc()
                failed = f"[{kind}] FAIL: {type(e).__name__}: {e}"
                log(failed)
                break
    finally:
        signal.alarm(0)
        os.chdir(old_cwd)
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        print(failed, file=sys.stderr)
        return 1
    log("python sdk: sync and async flows passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
