// csv2jsonl and jsonl2csv: CSV with unicode, commas, quotes and newlines goes to request lines, runs
// as a batch against the simulated upstream (which echoes the prompt), and comes back as CSV, for the
// chat, embeddings and responses shapes; bad input exits 2 and leaves no output file behind.
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';
import { jsonLines, runCli, startCli, tempDir } from './run-cli.js';

const ROWS: [string, string][] = [
  ['plain-1', 'Hello world'],
  ['comma,id', 'a, b, and c'],
  ['quote"id', 'she said "hi", then left'],
  ['newlines', 'line one\nline two\r\nline three'],
  ['unicode-日本', '你好，世界 🌍 — café naïve'],
  ['spaces', '  padded  '],
];

/** CSV as a spreadsheet saves it: a BOM, a header row, CRLF line ends, quotes doubled inside quoted fields. */
function spreadsheetCsv(rows: [string, string][]): string {
  const cell = (text: string) => (/[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text);
  return `\uFEFFcustom_id,content\r\n${rows.map((row) => row.map(cell).join(',')).join('\r\n')}\r\n`;
}

const HEADER = ['custom_id', 'status_code', 'content', 'usage', 'error_code', 'error_message'];

describe('csv2jsonl and jsonl2csv', () => {
  let upstream: UpstreamSim;
  let service: ServiceProcess;
  let env: Record<string, string>;

  beforeAll(async () => {
    upstream = await startUpstreamSim({
      failWhen: (_body, { key }) =>
        key.includes('REJECT')
          ? {
              status: 400,
              body: { error: { message: 'bad prompt, "quoted"', type: 'invalid_request_error', param: null, code: 'bad_prompt' } },
            }
          : undefined,
    });
    service = await startServiceProcess({ env: { UPSTREAM_BASE_URL: upstream.baseURL } });
    env = { OPENAI_BASE_URL: service.baseURL, OPENAI_API_KEY: 'local' };
  });
  afterAll(async () => {
    await service?.removeDataDir();
    await upstream?.close();
  });

  const shapes = [
    { shape: 'chat', endpoint: '/v1/chat/completions', prompt: (body: any) => body.messages[0].content },
    { shape: 'embeddings', endpoint: '/v1/embeddings', prompt: (body: any) => body.input },
    { shape: 'responses', endpoint: '/v1/responses', prompt: (body: any) => body.input },
  ];

  for (const { shape, endpoint, prompt } of shapes) {
    it(`round-trips ${shape}: CSV → request lines → batch → CSV, every cell intact`, async () => {
      const dir = await tempDir();
      const csvIn = path.join(dir, 'in.csv');
      const requests = path.join(dir, 'requests.jsonl');
      await writeFile(csvIn, spreadsheetCsv(ROWS));

      const converted = await runCli(['csv2jsonl', csvIn, requests, '--model', 'sim-model', '--endpoint', shape], { env });
      expect(converted).toMatchObject({ code: 0, stdout: '', stderr: '' });
      const lines = jsonLines(await readFile(requests, 'utf8'));
      expect(lines.map((line) => [line.custom_id, prompt(line.body)])).toEqual(ROWS);
      for (const line of lines) expect(line).toMatchObject({ method: 'POST', url: endpoint, body: { model: 'sim-model' } });

      // No --endpoint: the batch's endpoint is the url of the first line.
      const results = path.join(dir, 'results');
      const submitted = await runCli(['submit', requests, '--output', results, '--poll-interval', '100ms'], { env });
      expect(submitted.code).toBe(0);
      const summary = JSON.parse(await readFile(path.join(results, 'summary.json'), 'utf8'));
      expect(summary).toMatchObject({ status: 'completed', endpoint, request_counts: { total: ROWS.length, completed: ROWS.length } });

      const csvOut = path.join(dir, 'out.csv');
      const back = await runCli(['jsonl2csv', path.join(results, 'output.jsonl'), csvOut], { env });
      expect(back).toMatchObject({ code: 0, stdout: '', stderr: '' });
      const text = await readFile(csvOut, 'utf8');
      const [header, ...rows] = parse(text) as string[][];
      expect(header).toEqual(HEADER);
      const byId = new Map(rows.map((row) => [row[0]!, row]));
      expect([...byId.keys()].sort()).toEqual(ROWS.map(([id]) => id).sort());
      for (const [id, content] of ROWS) {
        const [, status, answer, usage, errorCode, errorMessage] = byId.get(id)!;
        expect([status, errorCode, errorMessage]).toEqual(['200', '', '']);
        expect(JSON.parse(usage!).total_tokens).toBeGreaterThan(0);
        if (shape === 'embeddings') {
          const vector = JSON.parse(answer!);
          expect(vector).toHaveLength(8);
          for (const value of vector) expect(typeof value).toBe('number');
        } else {
          expect(answer).toBe(`echo: ${content}`);
        }
      }

      // Without OUT, the same CSV goes to stdout.
      const toStdout = await runCli(['jsonl2csv', path.join(results, 'output.jsonl')], { env });
      expect(toStdout.code).toBe(0);
      expect(toStdout.stdout).toBe(text);
    });
  }

  it('reads stdin and writes stdout, with or without a header row', async () => {
    const noHeader = 'a,"x, y"\nb,"multi\nline"\n';
    const run = await runCli(['csv2jsonl', '-', '--model', 'm', '--endpoint', '/v1/responses'], { stdin: noHeader });
    expect(run.code).toBe(0);
    expect(jsonLines(run.stdout).map((line) => [line.custom_id, line.body.input, line.url])).toEqual([
      ['a', 'x, y', '/v1/responses'],
      ['b', 'multi\nline', '/v1/responses'],
    ]);
  });

  it('turns error lines into CSV: the upstream status and error, or the service error code', async () => {
    const dir = await tempDir();
    const requests = path.join(dir, 'requests.jsonl');
    await writeFile(path.join(dir, 'in.csv'), 'ok-1,fine\nbad-1,please REJECT\n');
    expect((await runCli(['csv2jsonl', path.join(dir, 'in.csv'), requests, '--model', 'sim-model'])).code).toBe(0);
    const results = path.join(dir, 'results');
    expect((await runCli(['submit', requests, '--output', results, '--poll-interval', '100ms'], { env })).code).toBe(0);
    const errorLines = await readFile(path.join(results, 'errors.jsonl'), 'utf8');
    const unrun = JSON.stringify({
      id: 'batch_req_1',
      custom_id: 'never-ran',
      response: null,
      error: { code: 'batch_expired', message: 'The batch expired.' },
    });

    const run = await runCli(['jsonl2csv', '-', '--bom'], { stdin: `${errorLines}\n${unrun}\n` });

    expect(run.code).toBe(0);
    expect(run.stdout.startsWith('\uFEFFcustom_id,status_code,content,usage,')).toBe(true);
    const rows = parse(run.stdout, { bom: true }) as string[][];
    expect(rows.slice(1)).toEqual([
      ['bad-1', '400', '', '', 'bad_prompt', 'bad prompt, "quoted"'],
      ['never-ran', '', '', '', 'batch_expired', 'The batch expired.'],
    ]);
  });

  it('stops quietly with exit 0 when the reader of stdout goes away (| head)', async () => {
    const dir = await tempDir();
    const input = path.join(dir, 'many.jsonl');
    const line = JSON.stringify({
      custom_id: 'x',
      response: { status_code: 200, body: { choices: [{ message: { content: 'y'.repeat(500) } }] } },
    });
    await writeFile(input, `${line}\n`.repeat(50_000));
    const cli = startCli(['jsonl2csv', input]);
    cli.child.stdout!.once('data', () => cli.child.stdout!.destroy());
    const run = await cli.done;
    expect(run).toMatchObject({ code: 0, stderr: '' });
  });

  it('refuses bad input with exit 2 and one line, leaving no output file', async () => {
    const dir = await tempDir();
    const out = path.join(dir, 'out');
    const cases: [string[], string, RegExp][] = [
      [
        ['csv2jsonl', 'IN', out, '--model', 'm'],
        'custom_id,content\na,one\nb\n',
        /^error: .*in row 3: expected two columns, custom_id and content\n$/,
      ],
      [['csv2jsonl', 'IN', out, '--model', 'm'], 'a,"never closed\n', /^error: .*in: .*[Qq]uote.*\n$/],
      [['csv2jsonl', 'IN', out, '--model', 'm'], ',empty id\n', /^error: .*in row 1: custom_id is empty\n$/],
      [['csv2jsonl', 'IN', out, '--model', 'm', '--endpoint', '/v1/moderations'], 'a,b\n', /^error: csv2jsonl builds requests for chat, /],
      [['csv2jsonl', 'IN', out], 'a,b\n', /^error: required option '--model <model>' not specified\n$/],
      [['jsonl2csv', 'IN', out], '{"custom_id":"a"}\nnot json\n', /^error: .*in line 2 is not JSON\n$/],
      [['jsonl2csv', 'IN', out], '[1,2]\n', /^error: .*in line 1 is not a JSON object\n$/],
      [['jsonl2csv', path.join(dir, 'missing.jsonl'), out], '', /^error: cannot open .*missing\.jsonl: no such file or directory\n$/],
    ];
    for (const [args, content, message] of cases) {
      const input = path.join(dir, 'in');
      await writeFile(input, content);
      const run = await runCli(args.map((arg) => (arg === 'IN' ? input : arg)));
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr, args.join(' ')).toMatch(message);
      await expect(stat(out)).rejects.toThrow();
      await expect(stat(`${out}.partial`)).rejects.toThrow();
    }
  });
});
