// A real `sundial serve --workers 0` for the SDK's tests (binary from SUNDIAL_BIN, default the
// repository's target/debug/sundial), on a free port with a fresh SQLite file.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(fileURLToPath(import.meta.url), "../../../..");

export async function waitUntil(what, check, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const freePort = () =>
  new Promise((res) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });

export async function startServer(...extra) {
  const dir = mkdtempSync(join(tmpdir(), "sundial-ts-sdk-"));
  const port = await freePort();
  const bin = process.env.SUNDIAL_BIN || join(repo, "target", "debug", "sundial");
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--db", `sqlite://${dir}/t.db`, "--workers", "0", "--lease", "2s", ...extra];
  const url = `http://127.0.0.1:${port}`;
  let proc;
  let exited;
  const start = async () => {
    proc = spawn(bin, args, { stdio: "ignore" });
    exited = false;
    proc.on("exit", () => (exited = true));
    await waitUntil("the server to be ready", async () => {
      if (exited) throw new Error("server exited");
      try {
        return (await fetch(`${url}/readyz`)).ok;
      } catch {
        return false;
      }
    });
  };
  const halt = async (signal) => {
    if (exited) return;
    const gone = new Promise((r) => proc.once("exit", r));
    proc.kill(signal);
    await gone;
  };
  await start();
  return {
    url,
    /** SIGKILL the server (its database stays). */
    kill: () => halt("SIGKILL"),
    /** Start it again on the same port and database. */
    restart: start,
    async stop() {
      await halt("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A logger that keeps what it is told. */
export function memoryLogger() {
  const lines = [];
  const keep = (level) => (m) => lines.push(`${level} ${m}`);
  return { lines, info: keep("info"), warn: keep("warn"), error: keep("error") };
}
