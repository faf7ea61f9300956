// The Upstash Box flow through the official TypeScript SDK (@upstash/box),
// against the server named by UPSTASH_BOX_BASE_URL / UPSTASH_BOX_API_KEY.
//
// Run by tests/sdk_compat.rs as `node tests/sdk/flow.mjs`. The SDK is loaded
// from $BOXD_SDK_NODE_DIR/node_modules (default target/sdk/node, installed by
// .ci/install-sdks). Every check prints one line; the first mismatch throws
// with the expected and the actual value, and the script exits nonzero. The
// whole run is bounded (FLOW_TIMEOUT_SECS, default 300 s) and every SDK
// request that takes a timeout gets one.
//
// The expected wire behaviour is docs/UPSTASH_API.md (§2, §3.1, §5).

import { createHash, randomBytes, webcrypto } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

// @upstash/box calls the global `crypto.randomUUID()`, which Node 18 (Debian
// 12's nodejs) does not define in ES modules; the SDK's engines field says
// >=18, so give it the same Web Crypto object that Node 20 has there.
if (!globalThis.crypto) globalThis.crypto = webcrypto;

const WORKSPACE = "/workspace/home";
const REQUEST_TIMEOUT_MS = 60_000;
const READY_STATUSES = ["idle", "running"];

const here = dirname(fileURLToPath(import.meta.url));
const sdkNodeDir = resolve(process.env.BOXD_SDK_NODE_DIR || join(here, "../../target/sdk/node"));
const pkgDir = join(sdkNodeDir, "node_modules/@upstash/box");

function log(msg) {
  console.log(msg);
}

function show(v) {
  if (v === undefined) return "undefined";
  return JSON.stringify(v);
}

function check(what, expected, actual) {
  if (JSON.stringify(expected) !== JSON.stringify(actual)) {
    throw new Error(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
  log(`  ok  ${what}: ${show(actual)}`);
}

function checkTrue(what, cond, detail) {
  if (!cond) throw new Error(`${what}: not true; actual: ${show(detail)}`);
  log(`  ok  ${what}`);
}

async function expectBoxError(BoxError, what, fn) {
  let result;
  try {
    result = await fn();
  } catch (e) {
    if (!(e instanceof BoxError)) throw new Error(`${what}: expected a BoxError, got ${e?.stack ?? e}`);
    log(`  ok  ${what}: BoxError(status=${e.statusCode}, ${show(e.message)})`);
    return e;
  }
  throw new Error(`${what}: expected a BoxError, but the call succeeded with ${show(result?.id ?? result)}`);
}

async function collectStream(run) {
  const start = Date.now();
  const out = [];
  for await (const chunk of run) out.push({ t: (Date.now() - start) / 1000, chunk });
  return out;
}

function describeChunks(chunks) {
  return chunks.map(({ t, chunk }) => `${t.toFixed(2)}s ${JSON.stringify(chunk)}`).join(", ");
}

async function flow(sdk, workdir) {
  const { Box, BoxError } = sdk;
  const tag = randomBytes(4).toString("hex");
  const name = `sdk-ts-${process.pid}-${tag}`;
  // labels: [A-Za-z0-9._:-], at most 20 chars; the ':' is sent as %3A
  const label = `sdk:${tag}`;
  const created = [];
  const deleted = new Set();
  const boxError = (what, fn) => expectBoxError(BoxError, what, fn);
  log(`[ts] create box ${show(name)} with label ${show(label)}`);
  try {
    const box = await Box.create({
      name,
      labels: [label],
      env: { SDK_FLOW_VAR: "hello-env" },
      timeout: REQUEST_TIMEOUT_MS,
    });
    created.push(box);
    checkTrue("create: box has an id", typeof box.id === "string" && box.id !== "", box.id);
    check("create: the box starts in the workspace", WORKSPACE, box.cwd);
    const other = await Box.create({ name: `${name}-other`, timeout: REQUEST_TIMEOUT_MS });
    created.push(other);
    checkTrue("create: a second box (no label) has another id", other.id !== box.id, other.id);

    // ---------------- exec ----------------
    log("[ts] exec");
    let run = await box.exec.command('echo "$SDK_FLOW_VAR"; echo to-stderr >&2');
    check("exec: stdout (env var from create)", "hello-env\n", run.stdout);
    check("exec: stderr kept apart from stdout", "to-stderr\n", run.stderr);
    check("exec: exit code", 0, run.exitCode);
    check("exec: status", "completed", run.status);
    check("exec: result is stdout on success", "hello-env\n", run.result);
    run = await box.exec.command("pwd");
    check("exec: default working directory", `${WORKSPACE}\n`, run.stdout);
    run = await box.exec.command("echo out; echo err >&2; exit 7");
    check("exec nonzero: exit code", 7, run.exitCode);
    check("exec nonzero: status", "failed", run.status);
    check("exec nonzero: stdout", "out\n", run.stdout);
    check("exec nonzero: stderr", "err\n", run.stderr);
    check("exec nonzero: result is stderr on failure", "err\n", run.result);

    // ---------------- exec stream ----------------
    log("[ts] exec stream");
    let stream = await box.exec.stream("echo first; sleep 1; echo second >&2; exit 3");
    let chunks = await collectStream(stream);
    log(`      chunks: ${describeChunks(chunks)}`);
    const outputs = chunks.filter((c) => c.chunk.type === "output");
    const exits = chunks.filter((c) => c.chunk.type === "exit");
    check(
      "stream: concatenated output (stdout and stderr)",
      "first\nsecond\n",
      outputs.map((c) => c.chunk.data).join(""),
    );
    check("stream: number of exit chunks", 1, exits.length);
    check("stream: the exit chunk comes last", "exit", chunks.at(-1)?.chunk.type);
    check("stream: exit code from the trailer", 3, exits[0].chunk.exitCode);
    checkTrue("stream: cpuNs is a number", Number.isInteger(exits[0].chunk.cpuNs), exits[0].chunk);
    const firstAt = outputs.find((c) => c.chunk.data.includes("first"))?.t;
    checkTrue(
      "stream: 'first' arrived while the command was still running (>=0.5 s before exit)",
      firstAt !== undefined && exits[0].t - firstAt >= 0.5,
      describeChunks(chunks),
    );
    check("stream: run status", "failed", stream.status);
    check("stream: run exit code", 3, stream.exitCode);
    check("stream: run result", "first\nsecond\n", stream.result);
    stream = await box.exec.stream("echo streamed-ok");
    chunks = await collectStream(stream);
    check("stream ok: chunk types", ["output", "exit"], chunks.map((c) => c.chunk.type));
    check("stream ok: output", "streamed-ok\n", chunks[0].chunk.data);
    check("stream ok: exit code", 0, chunks[1].chunk.exitCode);
    check("stream ok: run status", "completed", stream.status);

    // ---------------- cd ----------------
    log("[ts] cd");
    run = await box.exec.command("mkdir -p sub/dir && echo inside > sub/dir/here.txt");
    check("cd: mkdir exit code", 0, run.exitCode);
    await box.cd("sub/dir");
    check("cd: cwd after cd", `${WORKSPACE}/sub/dir`, box.cwd);
    run = await box.exec.command("pwd; cat here.txt");
    check("cd: exec runs in the folder", `${WORKSPACE}/sub/dir\ninside\n`, run.stdout);
    stream = await box.exec.stream("pwd");
    chunks = await collectStream(stream);
    check(
      "cd: exec stream runs in the folder",
      `${WORKSPACE}/sub/dir\n`,
      chunks.filter((c) => c.chunk.type === "output").map((c) => c.chunk.data).join(""),
    );
    check("cd: file read relative to the folder", "inside\n", await box.files.read("here.txt"));
    check(
      "cd: files.list() lists the folder",
      ["here.txt"],
      (await box.files.list()).map((e) => e.name).sort(),
    );
    await boxError("cd: into a missing folder fails", () => box.cd("no-such-dir"));
    check("cd: cwd unchanged after a failed cd", `${WORKSPACE}/sub/dir`, box.cwd);
    await box.cd("/tmp");
    run = await box.exec.command("pwd");
    check("cd: absolute folder outside the workspace", "/tmp\n", run.stdout);
    await box.cd(WORKSPACE);
    check("cd: back to the workspace", WORKSPACE, box.cwd);

    // ---------------- files ----------------
    log("[ts] files");
    const text = "hello from the typescript sdk\nünïcödé ✓\n";
    await box.files.write({ path: "hello.txt", content: text });
    check("files: read back what was written", text, await box.files.read("hello.txt"));
    check("files: read by absolute path", text, await box.files.read(`${WORKSPACE}/hello.txt`));
    check(
      "files: read by an unnormalized path (./sub/../hello.txt)",
      text,
      await box.files.read("./sub/../hello.txt"),
    );
    run = await box.exec.command("cat hello.txt");
    check("files: the written file is visible to exec", text, run.stdout);
    const raw = Buffer.concat([Buffer.from([0, 1, 2, 250, 255]), Buffer.from("binary")]);
    const b64 = raw.toString("base64");
    await box.files.write({ path: "bin.dat", content: b64, encoding: "base64" });
    check(
      "files: base64 read of a base64 write",
      b64,
      await box.files.read("bin.dat", { encoding: "base64" }),
    );
    run = await box.exec.command("od -An -tx1 bin.dat | tr -d ' \\n'");
    check("files: base64 write stored the raw bytes", raw.toString("hex"), run.stdout);
    const entries = Object.fromEntries((await box.files.list()).map((e) => [e.name, e]));
    checkTrue("files: list() has hello.txt", "hello.txt" in entries, Object.keys(entries));
    const e = entries["hello.txt"];
    check("files: entry path", `${WORKSPACE}/hello.txt`, e.path);
    check("files: entry size", Buffer.byteLength(text), e.size);
    check("files: entry is_dir", false, e.is_dir);
    checkTrue("files: entry mod_time is a string", typeof e.mod_time === "string", e.mod_time);
    checkTrue("files: list() has the folder sub", "sub" in entries, Object.keys(entries));
    check("files: folder entry is_dir", true, entries.sub.is_dir);
    check("files: list('sub')", ["dir"], (await box.files.list("sub")).map((x) => x.name).sort());
    await boxError("files: read of a missing file fails", () => box.files.read("missing.txt"));

    // ---------------- upload / download ----------------
    log("[ts] upload / download");
    const localBin = join(workdir, "local-ts.bin");
    const localTxt = join(workdir, "local-ts.txt");
    const binContent = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256));
    const txtContent = Buffer.from("uploaded text\n");
    writeFileSync(localBin, binContent);
    writeFileSync(localTxt, txtContent);
    await box.files.upload([
      { path: localBin, destination: "updir/blob.bin" },
      { path: localTxt, destination: "updir/note.txt" },
    ]);
    run = await box.exec.command("cat updir/note.txt; wc -c < updir/blob.bin");
    check(
      "upload: both files landed at their destinations (parents created)",
      "uploaded text\n1024\n",
      run.stdout,
    );
    run = await box.exec.command("sha256sum < updir/blob.bin | cut -d' ' -f1");
    check(
      "upload: binary bytes intact",
      `${createHash("sha256").update(binContent).digest("hex")}\n`,
      run.stdout,
    );
    const dlDir = join(workdir, "updir");
    rmSync(dlDir, { recursive: true, force: true });
    await box.files.download({ folder: "updir" }); // into ./updir (cwd is workdir)
    check("download: files in ./updir", ["blob.bin", "note.txt"], readdirSync(dlDir).sort());
    checkTrue(
      "download: binary file bytes equal",
      readFileSync(join(dlDir, "blob.bin")).equals(binContent),
      "differs",
    );
    check("download: text file", txtContent.toString(), readFileSync(join(dlDir, "note.txt"), "utf8"));

    // ---------------- list / get / status ----------------
    log("[ts] list, get, status");
    const listed = await Box.list({ label });
    checkTrue("list(label): a bare array", Array.isArray(listed), listed);
    const ids = listed.map((b) => b.id);
    checkTrue("list(label): the labelled box is found", ids.includes(box.id), ids);
    checkTrue("list(label): the box without the label is not", !ids.includes(other.id), ids);
    const mine = listed.find((b) => b.id === box.id);
    check("list(label): name", name, mine.name);
    checkTrue("list(label): labels contain the label", (mine.labels ?? []).includes(label), mine.labels);
    const allIds = (await Box.list()).map((b) => b.id);
    checkTrue("list(): both boxes", allIds.includes(box.id) && allIds.includes(other.id), allIds);
    const byName = await Box.getByName(name, { timeout: REQUEST_TIMEOUT_MS });
    check("getByName: same id", box.id, byName.id);
    run = await byName.exec.command("echo via-name");
    check("getByName: the handle works", "via-name\n", run.stdout);
    const byId = await Box.get(box.id, { timeout: REQUEST_TIMEOUT_MS });
    check("get(id): same id", box.id, byId.id);
    const status = await box.getStatus();
    checkTrue(
      "getStatus: {status: <ready status>}",
      status && READY_STATUSES.includes(status.status),
      status,
    );

    // ---------------- snapshots ----------------
    log("[ts] snapshots");
    await box.exec.command("mkdir -p snapdir && echo snapped > snapdir/f");
    const snap = await box.snapshot({ name: `${name}-snap` });
    check("snapshot: status", "ready", snap.status);
    check("snapshot: box_id", box.id, snap.box_id);
    checkTrue("snapshot: size reported", snap.size_bytes > 0, snap.size_bytes);
    checkTrue(
      "listSnapshots: the snapshot is listed",
      (await box.listSnapshots()).some((s) => s.id === snap.id),
      snap.id,
    );
    const restored = await Box.fromSnapshot(snap.id, { timeout: REQUEST_TIMEOUT_MS });
    created.push(restored);
    run = await restored.exec.command('cat snapdir/f; echo "$SDK_FLOW_VAR"');
    check("fromSnapshot: files and env of the snapshot", "snapped\nhello-env\n", run.stdout);
    await restored.delete();
    deleted.add(restored.id);
    await box.deleteSnapshot(snap.id);
    checkTrue(
      "deleteSnapshot: gone from the list",
      !(await box.listSnapshots()).some((s) => s.id === snap.id),
      snap.id,
    );
    const snap2 = await box.snapshot({ name: `${name}-snap2` });
    const bulk = await Box.deleteSnapshots({ snapshotIds: [snap2.id] });
    check("deleteSnapshots: count", 1, bulk.deleted);
    // ---------------- pause / resume ----------------
    log("[ts] pause / resume");
    await box.pause();
    check("pause: status paused", "paused", (await box.getStatus()).status);
    await box.pause();
    check("pause twice: still paused", "paused", (await box.getStatus()).status);
    run = await box.exec.command("echo after-pause");
    check("exec on a paused box resumes it", "after-pause\n", run.stdout);
    check("exec resumed: status idle", "idle", (await box.getStatus()).status);
    await box.pause();
    await box.resume();
    check("resume: status idle", "idle", (await box.getStatus()).status);
    await box.resume();
    check("resume twice: still idle", "idle", (await box.getStatus()).status);

    // ---------------- agent configuration ----------------
    log("[ts] agent configuration");
    const { Agent, ClaudeCode } = sdk;
    const agentKey = `sk-flow-${randomBytes(12).toString("hex")}`;
    const agentBox = await Box.create({
      agent: { harness: Agent.ClaudeCode, model: ClaudeCode.Sonnet_4_5, apiKey: agentKey },
      skills: ["upstash/qstash-js"],
      mcpServers: [
        { name: "fs", package: "@modelcontextprotocol/server-filesystem", args: ["/workspace/home"] },
        { name: "web", url: "https://mcp.example.com/sse", headers: { Authorization: `Bearer ${agentKey}` } },
      ],
      timeout: REQUEST_TIMEOUT_MS,
    });
    created.push(agentBox);
    check(
      "agent: modelConfig",
      { harness: "claude-code", provider: "claude-code", runner: "claude-code", model: ClaudeCode.Sonnet_4_5 },
      agentBox.modelConfig,
    );
    check("agent: skills.list()", ["upstash/qstash-js"], await agentBox.skills.list());
    await agentBox.skills.add("upstash/workflow-js/workflow");
    check(
      "agent: skills.add",
      ["upstash/qstash-js", "upstash/workflow-js/workflow"],
      await agentBox.skills.list(),
    );
    await agentBox.skills.remove("upstash/workflow-js/workflow");
    check("agent: skills.remove", ["upstash/qstash-js"], await agentBox.skills.list());
    await agentBox.configureModel(ClaudeCode.Opus_4_5);
    const agentAgain = await Box.get(agentBox.id, { timeout: REQUEST_TIMEOUT_MS });
    check("agent: configureModel, read back by get", ClaudeCode.Opus_4_5, agentAgain.modelConfig.model);
    run = await agentBox.exec.command("env; cat /proc/*/environ 2>/dev/null");
    checkTrue("agent: the key is not in the box's env", !run.stdout.includes(agentKey), "present");
    checkTrue(
      "agent: the key is in no list answer",
      !JSON.stringify(await Box.list()).includes(agentKey),
      "present",
    );
    const runErr = await boxError("agent.run: runs are not built yet", () =>
      agentAgain.agent.run({ prompt: "hi" }),
    );
    check("agent.run: status code", 501, runErr.statusCode);
    const customBox = await Box.create({
      agent: { harness: Agent.Custom, customHarness: { command: "my-agent", args: ["--fast"] } },
      timeout: REQUEST_TIMEOUT_MS,
    });
    created.push(customBox);
    check("custom harness: default model", "custom", customBox.modelConfig.model);
    await customBox.configureCustomHarness({ command: "/home/boxuser/agent", protocol: "box-sse-v1" });
    log("  ok  custom harness: configureCustomHarness");
    const harnessErr = await boxError("an unknown harness is refused", () =>
      Box.create({ agent: { harness: "gpt-cli", model: "m" }, timeout: REQUEST_TIMEOUT_MS }),
    );
    check("unknown harness: status code", 400, harnessErr.statusCode);
    checkTrue("unknown harness: the harnesses are named", harnessErr.message.includes("claude-code"), harnessErr.message);
    for (const b of [agentBox, customBox]) {
      await b.delete();
      deleted.add(b.id);
    }

    // ---------------- errors ----------------
    log("[ts] errors");
    let err = await boxError("a wrong API key is refused", () =>
      Box.list({ apiKey: `wrong-${randomBytes(24).toString("hex")}` }),
    );
    checkTrue("wrong API key: 401 or 403", [401, 403].includes(err.statusCode), err.statusCode);
    err = await boxError("get of an unknown box fails", () =>
      Box.get(`no-such-box-${tag}`, { timeout: REQUEST_TIMEOUT_MS }),
    );
    check("unknown box: status code", 404, err.statusCode);
    checkTrue(
      "unknown box: the body has an error message",
      !err.message.startsWith("Request failed with status"),
      err.message,
    );

    // ---------------- delete ----------------
    log("[ts] delete");
    await box.delete();
    deleted.add(box.id);
    log(`  ok  delete: box.delete() (${box.id})`);
    await Box.delete({ boxIds: [other.id] });
    deleted.add(other.id);
    log(`  ok  delete: bulk Box.delete({boxIds: [...]}) (${other.id})`);
    err = await boxError("get of the bulk-deleted box fails", () =>
      Box.get(other.id, { timeout: REQUEST_TIMEOUT_MS }),
    );
    check("get of the bulk-deleted box: status code", 404, err.statusCode);
    err = await boxError("get after delete fails", () =>
      Box.get(box.id, { timeout: REQUEST_TIMEOUT_MS }),
    );
    check("get after delete: status code", 404, err.statusCode);
    check("list(label) after delete", [], (await Box.list({ label })).map((b) => b.id));
    log("[ts] PASS");
  } finally {
    for (const b of created) {
      if (deleted.has(b.id)) continue;
      try {
        await b.delete();
        log(`  (cleanup: deleted box ${b.id})`);
      } catch (e) {
        log(`  (cleanup: deleting box ${b.id} failed: ${e})`);
      }
    }
  }
}

async function main() {
  for (const v of ["UPSTASH_BOX_BASE_URL", "UPSTASH_BOX_API_KEY"]) {
    if (!process.env[v]) {
      console.error(`flow.mjs: ${v} is not set`);
      process.exit(2);
    }
  }
  const bound = Number(process.env.FLOW_TIMEOUT_SECS || 300);
  let workdir;
  const timer = setTimeout(() => {
    console.error(`flow.mjs: FAIL: the whole run took longer than its bound (${bound}s)`);
    if (workdir) rmSync(workdir, { recursive: true, force: true });
    process.exit(3);
  }, bound * 1000);
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  const entry = pkg.exports?.["."]?.import ?? pkg.main;
  const sdk = await import(pathToFileURL(join(pkgDir, entry)).href);
  log(
    `@upstash/box ${pkg.version} (node ${process.version}) against ${process.env.UPSTASH_BOX_BASE_URL}, bound ${bound}s`,
  );
  workdir = mkdtempSync(join(tmpdir(), "boxd-sdk-ts-"));
  const oldCwd = process.cwd();
  process.chdir(workdir); // files.download writes into ./<folder>
  try {
    await flow(sdk, workdir);
  } finally {
    process.chdir(oldCwd);
    rmSync(workdir, { recursive: true, force: true });
    clearTimeout(timer);
  }
  log("typescript sdk: flow passed");
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  console.error(`[ts] FAIL: ${e?.message ?? e}`);
  process.exit(1);
});
