// Starts the real service as a child process for end-to-end tests and the benchmarks: from the
// TypeScript source (`node --import tsx local/main.ts`, no build step), or as `npm start` runs it
// (the esbuild bundle under plain node, with glibc's malloc held to two arenas).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The repository root (this file lives in test/support/). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const READY_TIMEOUT_MS = 30_000;
const POLL_INTERVAL_MS = 50;
const STOP_GRACE_MS = 5_000;
const MAX_LOG_CHARS = 4 * 1024 * 1024;

export interface ServiceProcessOptions {
  /** Extra environment (UPSTREAM_BASE_URL, API_KEYS, ...), layered over process.env. */
  env?: Record<string, string>;
  /** DATA_DIR; a fresh temp directory under os.tmpdir() when omitted. */
  dataDir?: string;
  /** Port to listen on; a free one when omitted. */
  port?: number;
  /** The entry script, relative to the repository root; default local/main.ts. */
  entry?: string;
  /**
   * Run what `npm start` runs: `npm run build:local` (once per process), then the bundle under
   * plain node with MALLOC_ARENA_MAX=2 unless the environment sets it. For the benchmarks' memory
   * and speed figures; `entry` is then ignored.
   */
  asNpmStart?: boolean;
  /**
   * Extra arguments for node, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] (Node 20 refuses
   * --cpu-prof in NODE_OPTIONS). Default: SERVICE_NODE_ARGS from the environment, split on spaces.
   */
  nodeArgs?: string[];
}

export interface ServiceProcess {
  /** http://127.0.0.1:PORT/v1 */
  baseURL: string;
  /** http://127.0.0.1:PORT */
  origin: string;
  port: number;
  dataDir: string;
  pid: number;
  /** Everything the process wrote to stdout and stderr so far (the last 4 MiB). */
  logs(): string;
  /** SIGTERM, wait for exit; SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill9(): Promise<void>;
  /** Stop this process if it still runs, then start a new one on the same port, DATA_DIR and env. */
  restart(): Promise<ServiceProcess>;
  /** Stop this process if it still runs, then delete DATA_DIR. */
  removeDataDir(): Promise<void>;
}

/** Children still running, killed if this process exits without stopping them. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** A port that was free a moment ago on 127.0.0.1 (listen(0), then close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('could not pick a free port'))));
    });
  });
}

let bundleBuilt: Promise<unknown> | undefined;
/** The bundle `npm start` runs; built on first use by the script `npm start` builds it with. */
async function npmStartBundle(): Promise<string> {
  bundleBuilt ??= promisify(execFile)('npm', ['run', '--silent', 'build:local'], { cwd: REPO_ROOT });
  await bundleBuilt;
  return 'dist/local/main.mjs';
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

export async function startServiceProcess(options: ServiceProcessOptions = {}): Promise<ServiceProcess> {
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'batch-service-')));
  const extraEnv = { ...options.env };
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: '127.0.0.1',
    PORT: String(port),
    DATA_DIR: dataDir,
    ...extraEnv,
  };

  installExitHook();
  const entry = options.entry ?? 'local/main.ts';
  const nodeArgs = options.nodeArgs ?? (process.env.SERVICE_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const asNpmStart = options.asNpmStart ?? false;
  if (asNpmStart) env.MALLOC_ARENA_MAX ??= '2';
  const args = asNpmStart ? [...nodeArgs, await npmStartBundle()] : [...nodeArgs, '--import', 'tsx', entry];
  const child = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);

  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    if (output.length > MAX_LOG_CHARS) output = output.slice(output.length - MAX_LOG_CHARS);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      live.delete(child);
      resolve();
    });
  });
  let spawnError: Error | undefined;
  child.once('error', (error) => {
    spawnError = error;
    live.delete(child);
  });

  const waitForExit = async (ms: number): Promise<boolean> => {
    if (exited(child) || spawnError) return true;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      exit.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
    ]);
    clearTimeout(timer);
    return done;
  };

  const stop = async () => {
    if (exited(child) || spawnError) return;
    child.kill('SIGTERM');
    if (await waitForExit(STOP_GRACE_MS)) return;
    child.kill('SIGKILL');
    await waitForExit(STOP_GRACE_MS);
  };

  const kill9 = async () => {
    if (exited(child) || spawnError) return;
    child.kill('SIGKILL');
    await waitForExit(STOP_GRACE_MS);
  };

  const origin = `http://127.0.0.1:${port}`;

  // On a failed start, leave nothing behind: no process, and no DATA_DIR this call created.
  const giveUp = async (message: string): Promise<never> => {
    await kill9();
    if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    throw new Error(`${message}\n--- logs ---\n${output}`);
  };

  // Wait until GET /healthz answers 200, the process exits, or the time passes.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (spawnError || exited(child)) {
      const how = spawnError ? `failed to spawn: ${spawnError.message}` : `exited with ${child.exitCode ?? child.signalCode}`;
      await giveUp(`service process ${how} before it was ready.`);
    }
    try {
      const response = await fetch(`${origin}/healthz`, { signal: AbortSignal.timeout(1_000) });
      await response.arrayBuffer();
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() >= deadline) await giveUp(`service process not ready after ${READY_TIMEOUT_MS} ms.`);
    await sleep(POLL_INTERVAL_MS);
  }

  return {
    baseURL: `${origin}/v1`,
    origin,
    port,
    dataDir,
    pid: child.pid ?? -1,
    logs: () => output,
    stop,
    kill9,
    restart: async () => {
      await stop();
      return startServiceProcess({ env: extraEnv, dataDir, port, entry, nodeArgs, asNpmStart });
    },
    removeDataDir: async () => {
      await stop();
      await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}
