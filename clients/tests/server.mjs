// Starts a real `imlog serve` for the client tests, on a fixed free port (so
// a restart keeps its address), over a fresh database of the test Postgres
// (IMLOG_TEST_POSTGRES_URL, as infra/test.sh sets it) or, without one, on
// serve's embedded defaults in a temporary data dir.
//
// The binary: IMLOG_BIN, else $CARGO_TARGET_DIR/debug/imlog, else
// target/debug/imlog of the repository.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(fileURLToPath(import.meta.url), '../../..');

export function imlogBinary() {
  const candidates = [
    process.env.IMLOG_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, 'debug/imlog'),
    join(repo, 'target/debug/imlog'),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`no imlog binary (tried ${candidates.join(', ')}): cargo build -p imlog`);
  return found;
}

async function freePort() {
  for (;;) {
    // Outside the ephemeral range, like infra/lib.sh: a restart must get it back.
    const port = 20000 + Math.floor(Math.random() * 10000);
    const free = await new Promise((res) => {
      const probe = createServer();
      probe.once('error', () => res(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => res(true)));
    });
    if (free) return port;
  }
}

function freshDatabase(adminUrl) {
  const name = `imlog_js_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  execFileSync('psql', [adminUrl, '-q', '-c', `CREATE DATABASE ${name}`], { stdio: 'pipe' });
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * @param {{env?: Record<string, string>}} [options]
 */
export async function startServer(options = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'imlog-js-'));
  // Root runs the embedded cluster as `postgres`, which must reach the dir.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const env = {
    ...process.env,
    IMLOG_DATA_DIR: join(dir, 'data'),
    IMLOG_LISTEN: `127.0.0.1:${port}`,
    // Every test client comes from 127.0.0.1.
    IMLOG_GATEWAY__AUTH_RATE_PER_MINUTE: '1000000',
    IMLOG_GATEWAY__AUTH_BURST: '1000000',
    // S3's minimum part: small files still make several chunks.
    IMLOG_FILES__CHUNK_BYTES: String(5 * 1024 * 1024),
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
    ...options.env,
  };
  if (process.env.IMLOG_TEST_POSTGRES_URL) {
    env.IMLOG_POSTGRES__URL = freshDatabase(process.env.IMLOG_TEST_POSTGRES_URL);
  }
  const server = {
    url: `http://127.0.0.1:${port}`,
    dir,
    /** @type {import('node:child_process').ChildProcess | null} */
    child: null,
    output: '',
    async start() {
      const child = spawn(imlogBinary(), ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      await new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`imlog serve did not start:\n${this.output}`)), 60_000);
        const onData = (chunk) => {
          this.output += chunk;
          if (this.output.includes(`imlog listening on http://127.0.0.1:${port}`)) {
            clearTimeout(timer);
            res();
          }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', (chunk) => (this.output += chunk));
        child.once('exit', (code) => {
          clearTimeout(timer);
          rej(new Error(`imlog serve exited (${code}):\n${this.output}`));
        });
      });
      return this;
    },
    /** kill -9: no shutdown of any kind. */
    async crash() {
      const child = this.child;
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((res) => child.once('exit', res));
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      const child = this.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((res) => child.once('exit', res));
        child.kill('SIGTERM');
        let timer;
        await Promise.race([exited, new Promise((res) => (timer = setTimeout(res, 15_000)))]);
        clearTimeout(timer);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server.start();
}
