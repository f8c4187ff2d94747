// The `batch` command against a started service: submit and wait, the Uploads API path, a failed,
// an expired and a cancelled batch, status, list, download, Ctrl-C, and the service's refusals.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, chatLines, client, writeJsonl } from '../support/e2e.js';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';
import { jsonLines, runCli, startCli, stderrMatches, tempDir } from './run-cli.js';

/** A plain progress line, as written when stderr is not a terminal. */
const PROGRESS_LINE =
  /^batch_\w+ (validating|in_progress|finalizing|cancelling|completed|failed|expired|cancelled)(: \d+\/\d+ done, \d+ failed(, [\d.]+ req\/s)?(, ETA \w+)?)?$/;

function progressLines(stderr: string, id: string): string[] {
  return stderr.split('\n').filter((line) => line.startsWith(`${id} `));
}

async function resultsIn(dir: string) {
  const output = jsonLines(await readFile(path.join(dir, 'output.jsonl'), 'utf8'));
  const errors = jsonLines(await readFile(path.join(dir, 'errors.jsonl'), 'utf8'));
  const summary = JSON.parse(await readFile(path.join(dir, 'summary.json'), 'utf8'));
  const ids = [...output, ...errors].map((line) => line.custom_id as string);
  return { output, errors, summary, ids };
}

describe('the batch command', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;
  let alice: Record<string, string>;
  let bob: Record<string, string>;

  // Tests that act on a running batch give it seconds of work (30 to 40 requests, 2 at a time, 500 ms each:
  // 7 to 10 s), so it is still running on a loaded machine when the command under test starts.
  beforeAll(async () => {
    upstream = await startUpstreamSim({
      latencyMs: 5,
      failWhen: (_body, { key }) =>
        key.includes('REJECT')
          ? { status: 400, body: { error: { message: 'bad prompt', type: 'invalid_request_error', param: null, code: 'bad_prompt' } } }
          : undefined,
    });
    service = await startServiceProcess({
      env: {
        API_KEYS: 'alice-key:alpha,bob-key:beta',
        UPSTREAM_BASE_URL: upstream.baseURL,
        UPSTREAM_CONCURRENCY: '2',
        UPSTREAM_MAX_ATTEMPTS: '2',
        UPSTREAM_BACKOFF_BASE: '10ms',
        MIN_COMPLETION_WINDOW: '3s',
        CHUNK_MAX_REQUESTS: '10',
      },
    });
    alice = { OPENAI_BASE_URL: service.baseURL, OPENAI_API_KEY: 'alice-key' };
    bob = { OPENAI_BASE_URL: service.baseURL, OPENAI_API_KEY: 'bob-key' };
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  it('submit --wait uploads, creates, shows one progress line per change, and writes the three files', async () => {
    upstream.configure({ latencyMs: 5 });
    const input = await writeJsonl([...chatLines(25), chatLine('rejected-1', 'REJECT me'), chatLine('rejected-2', 'REJECT me too')]);
    const dir = path.join(await tempDir(), 'results');

    const run = await runCli(['submit', input, '--wait', '--output', dir, '--poll-interval', '100ms', '--metadata', 'team=eval', 'run=7'], {
      env: alice,
    });

    expect(run.stderr.includes('\u001b')).toBe(false); // no terminal escapes
    expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(run.code).toBe(0);
    const id = run.stdout.trim();
    expect(id).toMatch(/^batch_\w+$/);
    expect(run.stderr).toMatch(/^uploaded .*input\.jsonl \([\d.]+KB\) as file-\w+$/m);
    const lines = progressLines(run.stderr, id);
    for (const line of lines) expect(line).toMatch(PROGRESS_LINE);
    for (let i = 1; i < lines.length; i++) expect(lines[i]).not.toBe(lines[i - 1]);
    expect(lines.at(-1)).toBe(`${id} completed: 27/27 done, 2 failed`);
    expect(run.stderr).toContain(`wrote ${dir}/output.jsonl, ${dir}/errors.jsonl, ${dir}/summary.json`);

    const { output, errors, summary, ids } = await resultsIn(dir);
    expect(new Set(ids).size).toBe(27);
    expect(ids).toHaveLength(27);
    expect(output).toHaveLength(25);
    expect(errors.map((line) => line.custom_id).sort()).toEqual(['rejected-1', 'rejected-2']);
    expect(errors[0].response.status_code).toBe(400);
    expect(summary).toMatchObject({ id, status: 'completed', endpoint: '/v1/chat/completions', metadata: { team: 'eval', run: '7' } });
    expect(summary.request_counts).toEqual({ total: 27, completed: 25, failed: 2 });
  });

  it('sends a file above the threshold through the Uploads API in parts, with a line per part', async () => {
    const input = await writeJsonl(chatLines(60, { prefix: 'a longer question to make the file span several parts' }));
    const { size } = await stat(input);
    const dir = await tempDir();

    const run = await runCli(['submit', input, '--output', dir, '--poll-interval', '100ms', '--multipart-threshold', '2KB'], {
      env: { ...alice, BATCH_PART_SIZE: '1KB' },
    });

    expect(run.code).toBe(0);
    const parts = Math.ceil(size / 1024);
    expect(parts).toBeGreaterThan(3);
    const partLines = run.stderr.split('\n').filter((line) => line.startsWith('uploading '));
    expect(partLines).toHaveLength(parts);
    expect(partLines.at(-1)).toMatch(new RegExp(`^uploading input\\.jsonl: ${parts}/${parts} parts, `));
    const { summary, ids } = await resultsIn(dir);
    expect(summary.status).toBe('completed');
    expect(new Set(ids).size).toBe(60);
    expect(ids).toHaveLength(60);
    const inputFile = await client(service.baseURL, 'alice-key').files.retrieve(summary.input_file_id);
    expect(inputFile.bytes).toBe(size);
  });

  it('exits 4 for a batch whose input fails validation, naming the lines', async () => {
    const input = await writeJsonl([
      chatLine('a', 'one'),
      chatLine('a', 'two'),
      { custom_id: 'b', method: 'POST', url: '/v1/chat/completions' },
    ]);
    const dir = await tempDir();

    const run = await runCli(['submit', input, '--output', dir, '--poll-interval', '100ms'], { env: alice });

    expect(run.code).toBe(4);
    const id = run.stdout.trim();
    expect(progressLines(run.stderr, id).at(-1)).toMatch(new RegExp(`^${id} failed(: 0/3 done, 0 failed)?$`));
    expect(run.stderr).toMatch(/^line 2: duplicate_custom_id: /m);
    expect(run.stderr).toMatch(/^line 3: missing_body: /m);
    const { output, errors, summary } = await resultsIn(dir);
    expect([output, errors]).toEqual([[], []]);
    expect(summary.status).toBe('failed');
    expect(summary.errors.data.map((error: any) => error.line)).toEqual([2, 3]);
  });

  it('exits 5 for a batch that expires, with the unrun lines as batch_expired', async () => {
    upstream.configure({ latencyMs: 300 });
    const input = await writeJsonl(chatLines(40, { prefix: 'slow' }));
    const dir = await tempDir();

    const run = await runCli(['submit', input, '--window', '3s', '--output', dir, '--poll-interval', '200ms'], { env: alice });
    upstream.configure({ latencyMs: 5 });

    expect(run.code).toBe(5);
    const { errors, summary, ids } = await resultsIn(dir);
    expect(summary.status).toBe('expired');
    expect(new Set(ids).size).toBe(40);
    expect(ids).toHaveLength(40);
    expect(errors.some((line) => line.error?.code === 'batch_expired')).toBe(true);
  });

  it('cancel --wait exits 6 and downloads the partial results, every custom_id once', async () => {
    upstream.configure({ latencyMs: 500 });
    const input = await writeJsonl(chatLines(40, { prefix: 'to cancel' }));
    const submitted = await runCli(['submit', input], { env: alice });
    expect(submitted.code).toBe(0);
    const id = submitted.stdout.trim();
    const dir = await tempDir();

    const run = await runCli(['cancel', id, '--wait', '--output', dir, '--poll-interval', '100ms'], { env: alice });
    upstream.configure({ latencyMs: 5 });

    expect(run.code).toBe(6);
    expect(run.stdout).toMatch(new RegExp(`^${id} (cancelling|cancelled)\\n$`));
    expect(progressLines(run.stderr, id).at(-1)).toMatch(new RegExp(`^${id} cancelled: \\d+/40 done, \\d+ failed$`));
    const { errors, summary, ids } = await resultsIn(dir);
    expect(summary.status).toBe('cancelled');
    expect(new Set(ids).size).toBe(40);
    expect(ids).toHaveLength(40);
    expect(errors.filter((line) => line.error?.code === 'batch_cancelled').length).toBeGreaterThan(0);
  });

  it('stops waiting on Ctrl-C with exit 130, and the batch goes on', async () => {
    upstream.configure({ latencyMs: 500 });
    const input = await writeJsonl(chatLines(40, { prefix: 'interrupted' }));
    const id = (await runCli(['submit', input], { env: alice })).stdout.trim();

    const waiting = startCli(['wait', id, '--poll-interval', '100ms'], { env: alice });
    await stderrMatches(waiting, new RegExp(`^${id} in_progress`, 'm'));
    waiting.child.kill('SIGINT');
    const run = await waiting.done;

    expect(run.code).toBe(130);
    expect(run.stderr).toContain(`stopped waiting; ${id} goes on (batch wait ${id})`);
    const openai = client(service.baseURL, 'alice-key');
    expect(['in_progress', 'finalizing', 'completed']).toContain((await openai.batches.retrieve(id)).status);
    await openai.batches.cancel(id).catch(() => undefined);
    upstream.configure({ latencyMs: 5 });
  });

  it('status, list and download show the project its own batches; another project gets the 404', async () => {
    const first = (
      await runCli(['submit', await writeJsonl(chatLines(3)), '--poll-interval', '100ms', '--output', await tempDir()], { env: alice })
    ).stdout.trim();
    const second = (
      await runCli(['submit', await writeJsonl(chatLines(4)), '--poll-interval', '100ms', '--wait'], { env: alice, cwd: await tempDir() })
    ).stdout.trim();

    const status = await runCli(['status', first], { env: alice });
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^id +${first}$`, 'm'));
    expect(status.stdout).toMatch(/^status +completed$/m);
    expect(status.stdout).toMatch(/^requests +3\/3 done \(3 completed, 0 failed\)$/m);

    const asJson = await runCli(['status', first, '--json'], { env: alice });
    expect(JSON.parse(asJson.stdout)).toMatchObject({ id: first, object: 'batch', status: 'completed' });

    const listed = await runCli(['list', '--limit', '2'], { env: alice });
    expect(listed.code).toBe(0);
    const rows = listed.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^ID +STATUS +DONE +FAILED +CREATED +ENDPOINT$/);
    expect(rows.slice(1).map((row) => row.split(/\s+/)[0])).toEqual([second, first]);
    expect(rows[1]).toMatch(/ completed +4\/4 +0 /);
    expect(listed.stderr).toBe(`more: batch list --after ${first}\n`);
    const page = JSON.parse((await runCli(['list', '--json', '--limit', '1', '--after', second], { env: alice })).stdout);
    expect(page.map((batch: any) => batch.id)).toEqual([first]);

    const dir = await tempDir();
    const downloaded = await runCli(['download', first, '--output', dir], { env: alice });
    expect(downloaded.code).toBe(0);
    expect((await resultsIn(dir)).ids.sort()).toEqual(['req-1', 'req-2', 'req-3']);

    // Cancelling a batch that has ended is the service's 409, shown as its message and code.
    const late = await runCli(['cancel', first], { env: alice });
    expect(late.code).toBe(1);
    expect(late.stderr).toMatch(/^error: .+ \(\w+, HTTP 409\)\n$/);

    const bobsList = await runCli(['list', '--json'], { env: bob });
    expect(JSON.parse(bobsList.stdout)).toEqual([]);
    for (const command of [
      ['status', first],
      ['download', first, '--output', await tempDir()],
      ['cancel', first],
    ]) {
      const refused = await runCli(command, { env: bob });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/^error: .+ \(\w+, HTTP 404\)\n$/);
    }
    const wrongKey = await runCli(['list'], { env: { ...alice, OPENAI_API_KEY: 'nobody' } });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(/^error: .+HTTP 401\)\n$/);
    expect(wrongKey.stderr).not.toContain('nobody');
  });

  it('download of a batch still running exits 1 and writes nothing', async () => {
    upstream.configure({ latencyMs: 500 });
    const id = (await runCli(['submit', await writeJsonl(chatLines(40, { prefix: 'running' }))], { env: alice })).stdout.trim();
    const dir = path.join(await tempDir(), 'never');

    const run = await runCli(['download', id, '--output', dir], { env: alice });

    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`^error: ${id} is (validating|in_progress); its files are written when it ends`));
    await expect(stat(dir)).rejects.toThrow();
    await client(service.baseURL, 'alice-key').batches.cancel(id);
    upstream.configure({ latencyMs: 5 });
  });

  it('keeps waiting across a restart of the service, and the batch ends completed', async () => {
    upstream.configure({ latencyMs: 500 });
    const id = (await runCli(['submit', await writeJsonl(chatLines(30, { prefix: 'restart' }))], { env: alice })).stdout.trim();
    const dir = await tempDir();
    const waiting = startCli(['wait', id, '--output', dir, '--poll-interval', '200ms'], { env: alice });
    await stderrMatches(waiting, new RegExp(`^${id} in_progress`, 'm'));

    service = await service.restart();
    const run = await waiting.done;
    upstream.configure({ latencyMs: 5 });

    expect(run.stderr).not.toMatch(/^error/m);
    expect(run.code).toBe(0);
    const { summary, ids } = await resultsIn(dir);
    expect(summary.status).toBe('completed');
    expect(new Set(ids).size).toBe(30);
    expect(ids).toHaveLength(30);
  });

  it('refuses bad arguments with exit 2 before anything is uploaded, and leaves nothing behind when the service refuses', async () => {
    const openai = client(service.baseURL, 'alice-key');
    const inputs = async () => (await openai.files.list({ purpose: 'batch' })).data.length;
    const before = await inputs();
    const input = await writeJsonl(chatLines(2));
    const noUrl = await writeJsonl([{ custom_id: 'a', method: 'POST', body: { model: 'm' } }]);

    for (const args of [
      ['submit', input, '--metadata', 'novalue'],
      ['submit', input, '--poll-interval', 'soon'],
      ['submit', input, '--part-size', 'big'],
      ['submit', noUrl],
      ['submit', '/nonexistent/input.jsonl', '--endpoint', '/v1/chat/completions'],
      ['list', '--limit', '0'],
      ['status'],
      ['frobnicate'],
    ]) {
      const run = await runCli(args, { env: alice });
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(run.stderr).toMatch(/^error: /);
    }
    expect(await inputs()).toBe(before);

    // What only the service can refuse is its 400; the uploaded input is deleted again.
    for (const args of [
      ['submit', input, '--window', '7x'],
      ['submit', input, '--endpoint', '/v1/nope'],
    ]) {
      const run = await runCli(args, { env: alice });
      expect(run.code, args.join(' ')).toBe(1);
      expect(run.stderr, args.join(' ')).toMatch(/^uploaded .+\nerror: .+HTTP 400\)\n$/);
      expect(run.stdout).toBe('');
    }
    expect(await inputs()).toBe(before);
  });
});
