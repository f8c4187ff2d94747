// The command without a service: help from a checkout, connection refused, a missing key.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { chatLines, writeJsonl } from '../support/e2e.js';
import { freePort, REPO_ROOT } from '../support/service-process.js';
import { runCli } from './run-cli.js';

describe('the batch command on its own', () => {
  it('answers --help through npm run and npx from the checkout, with the exit codes', async () => {
    const run = promisify(execFile);
    for (const [command, args] of [
      ['npm', ['run', '--silent', 'batch', '--', '--help']],
      ['npx', ['batch', '--help']],
    ] as const) {
      const { stdout } = await run(command, [...args], { cwd: REPO_ROOT });
      expect(stdout).toMatch(/^Usage: batch \[options\] \[command\]/);
      for (const name of ['submit', 'status', 'wait', 'download', 'list', 'cancel', 'csv2jsonl', 'jsonl2csv']) {
        expect(stdout).toMatch(new RegExp(`^  ${name} `, 'm'));
      }
      expect(stdout).toMatch(/^ {2}3 {4}connection: the service could not be reached$/m);
    }
  });

  it('exits 3 with one line when the service refuses connections, for every command that calls it', async () => {
    const baseURL = `http://127.0.0.1:${await freePort()}/v1`;
    const env = { OPENAI_BASE_URL: baseURL, OPENAI_API_KEY: 'secret-key-123' };
    const input = await writeJsonl(chatLines(2));
    for (const args of [['list'], ['status', 'batch_x'], ['submit', input], ['cancel', 'batch_x'], ['wait', 'batch_x']]) {
      const run = await runCli(args, { env });
      expect(run.code, args.join(' ')).toBe(3);
      expect(run.stderr).toBe(`error: cannot reach ${baseURL} (ECONNREFUSED)\n`);
      expect(run.stdout).toBe('');
    }
  });

  it('takes --base-url and --api-key over the environment', async () => {
    const refused = `http://127.0.0.1:${await freePort()}/v1`;
    const run = await runCli(['list', '--base-url', refused, '--api-key', 'k'], {
      env: { OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' },
    });
    expect(run.code).toBe(3);
    expect(run.stderr).toBe(`error: cannot reach ${refused} (ECONNREFUSED)\n`);
  });

  it('exits 2 without an API key or with a base URL that is not a URL', async () => {
    const noKey = await runCli(['list'], { env: { OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' } });
    expect(noKey).toMatchObject({ code: 2, stdout: '', stderr: 'error: no API key: set OPENAI_API_KEY or pass --api-key\n' });
    const badUrl = await runCli(['list', '--base-url', 'not a url'], { env: { OPENAI_API_KEY: 'k' } });
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toMatch(/^error: --base-url "not a url" is not a URL/);
  });
});
