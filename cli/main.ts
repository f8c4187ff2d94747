// `batch`: submit, watch and fetch batches of the service from a shell, and turn CSV into request
// lines and result lines into CSV. Every call to the service goes through the official openai SDK.
import bytes from 'bytes';
import { Command, InvalidArgumentError, Option } from 'commander';
import ms from 'ms';
import type OpenAI from 'openai';
import type { Batch, BatchCreateParams } from 'openai/resources/batches';
import { batchTable, describeBatch, downloadResults, Interrupted, validationErrors, waitForEnd } from './batches.js';
import { baseUrlOf, type ConnectionOptions, DEFAULT_BASE_URL, serviceClient } from './client.js';
import { csvToJsonl, ENDPOINT_ALIASES, jsonlToCsv } from './csv.js';
import { describeFailure, EXIT_CODES_HELP, ExitCode, exitCodeOfStatus, TERMINAL_STATUSES } from './exit.js';
import { eachResult, resultOf, retryBatch, retrySelection } from './extensions.js';
import { DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, endpointOfFirstLine, uploadInput } from './upload.js';

/** The exit code of the action that ran (commander does not pass on what an action returns). */
let outcome: number = ExitCode.ok;
const action =
  <Args extends unknown[]>(run: (...args: Args) => Promise<number>) =>
  async (...args: Args) => {
    outcome = await run(...args);
  };

interface WaitFlags {
  pollInterval: number;
  output?: string;
}
interface SubmitFlags extends WaitFlags {
  endpoint?: string;
  window: string;
  metadata?: Record<string, string>;
  wait?: boolean;
  multipartThreshold: number;
  partSize: number;
}
interface CancelFlags extends WaitFlags {
  wait?: boolean;
}
interface ListFlags {
  limit: number;
  after?: string;
  json?: boolean;
}

const stdout = (line: string) => process.stdout.write(`${line}\n`);
const stderr = (line: string) => process.stderr.write(`${line}\n`);

function parseSize(value: string): number {
  const size = /^\d+$/.test(value) ? Number(value) : bytes.parse(value);
  if (size === null || !Number.isSafeInteger(size) || size < 1)
    throw new InvalidArgumentError('expected a size such as 4194304, 512KB or 4MB.');
  return size;
}

function parseDuration(value: string): number {
  const duration = ms(value as ms.StringValue) as number | undefined;
  if (duration === undefined || !Number.isFinite(duration) || duration <= 0)
    throw new InvalidArgumentError('expected a duration such as 500ms, 2s or 1m.');
  return duration;
}

function parseLimit(value: string): number {
  const limit = Number(value);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw new InvalidArgumentError('expected a whole number from 1 to 100.');
  return limit;
}

function collectMetadata(pair: string, previous: Record<string, string> = {}): Record<string, string> {
  const separator = pair.indexOf('=');
  if (separator <= 0) throw new InvalidArgumentError('expected key=value.');
  return { ...previous, [pair.slice(0, separator)]: pair.slice(separator + 1) };
}

const pollOption = () =>
  new Option('--poll-interval <duration>', 'time between two status checks').argParser(parseDuration).default(2000, '2s');

/** Aborted by Ctrl-C while a command waits for a batch; the batch goes on. */
function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  return controller.signal;
}

function connection(command: Command): { client: OpenAI } {
  return { client: serviceClient(command.optsWithGlobals<ConnectionOptions>()) };
}

/** Waits for the batch's end with progress, downloads its files into dir when asked; the exit code follows its status. */
async function waitThenFetch(client: OpenAI, id: string, options: { pollInterval: number; output?: string }): Promise<number> {
  const batch = await waitForEnd(client, id, { pollMs: options.pollInterval, progress: process.stderr, signal: interruptSignal() });
  for (const line of validationErrors(batch)) stderr(line);
  if (options.output) stderr(`wrote ${(await downloadResults(client, batch, options.output)).join(', ')}`);
  return exitCodeOfStatus(batch.status);
}

/** After a new batch (submit, retry): --wait, or --output which implies it, follows it to its end into ./ID by default. */
async function followIfAsked(
  client: OpenAI,
  id: string,
  options: { wait?: boolean; output?: string; pollInterval: number },
): Promise<number> {
  if (!options.wait && !options.output) return ExitCode.ok;
  return waitThenFetch(client, id, { pollInterval: options.pollInterval, output: options.output ?? id });
}

function program(): Command {
  const batch = new Command('batch')
    .description('Submit, watch and download batches of an OpenAI-compatible Batch API, and convert CSV to and from JSONL.')
    .exitOverride()
    .addOption(new Option('--base-url <url>', `the service base URL (default: ${DEFAULT_BASE_URL})`).env('OPENAI_BASE_URL'))
    .addOption(new Option('--api-key <key>', 'API key (prefer the environment: a flag shows in ps)').env('OPENAI_API_KEY'))
    .addHelpText(
      'after',
      `
Progress goes to stderr: a live bar on a terminal, one line per change elsewhere. stdout carries
what scripts read (batch ids, status, JSONL, CSV).

Example:
  export OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=local
  batch csv2jsonl questions.csv requests.jsonl --model gpt-4o-mini
  batch submit requests.jsonl --wait --output results/
  batch jsonl2csv results/output.jsonl results.csv

${EXIT_CODES_HELP}`,
    );

  batch
    .command('submit')
    .description('upload a JSONL file of requests and create a batch over it; prints the batch id')
    .argument('<file>', 'the JSONL input file')
    .option('--endpoint <endpoint>', "the batch's endpoint (default: the url of the file's first line)")
    .option('--window <window>', 'completion window, e.g. 24h', '24h')
    .option('--metadata <key=value...>', 'metadata of the batch (repeatable)', collectMetadata)
    .option('--wait', 'wait for the end with a progress bar, then download the files (exit code by status)')
    .option('--output <dir>', 'where --wait writes output.jsonl, errors.jsonl and summary.json (default: ./BATCH_ID; implies --wait)')
    .addOption(pollOption())
    .addOption(
      new Option('--multipart-threshold <size>', 'files larger than this go through the Uploads API in parts')
        .env('BATCH_MULTIPART_THRESHOLD')
        .argParser(parseSize)
        .default(DEFAULT_MULTIPART_THRESHOLD, '4MiB'),
    )
    .addOption(
      new Option('--part-size <size>', 'size of one part for the Uploads API')
        .env('BATCH_PART_SIZE')
        .argParser(parseSize)
        .default(DEFAULT_PART_SIZE, '4MiB'),
    )
    .action(
      action(async (file: string, options: SubmitFlags, command: Command) => {
        const endpoint = options.endpoint ? (ENDPOINT_ALIASES[options.endpoint] ?? options.endpoint) : await endpointOfFirstLine(file);
        const { client } = connection(command);
        const input = await uploadInput(client, file, {
          multipartThreshold: options.multipartThreshold,
          partSize: options.partSize,
          progress: process.stderr,
        });
        stderr(`uploaded ${file} (${bytes.format(input.bytes)}) as ${input.id}`);
        let created: Batch;
        try {
          created = await client.batches.create({
            input_file_id: input.id,
            endpoint: endpoint as BatchCreateParams['endpoint'],
            completion_window: options.window as BatchCreateParams['completion_window'],
            ...(options.metadata ? { metadata: options.metadata } : {}),
          });
        } catch (error) {
          // A refused batch (a bad window, endpoint or metadata) leaves no input file behind.
          await client.files.delete(input.id).catch(() => undefined);
          throw error;
        }
        stdout(created.id);
        return followIfAsked(client, created.id, options);
      }),
    );

  batch
    .command('status')
    .description("show a batch's status, counts, files and times")
    .argument('<id>', 'batch id')
    .option('--json', 'print the Batch object as JSON')
    .action(
      action(async (id: string, options: { json?: boolean }, command: Command) => {
        const found = await connection(command).client.batches.retrieve(id);
        stdout(options.json ? JSON.stringify(found, null, 2) : describeBatch(found));
        return ExitCode.ok;
      }),
    );

  batch
    .command('wait')
    .description('wait for a batch to end, with progress (exit code by its final status)')
    .argument('<id>', 'batch id')
    .option('--output <dir>', 'then download output.jsonl, errors.jsonl and summary.json into dir')
    .addOption(pollOption())
    .action(action(async (id: string, options: WaitFlags, command: Command) => waitThenFetch(connection(command).client, id, options)));

  batch
    .command('download')
    .description("download an ended batch's output.jsonl, errors.jsonl and summary.json")
    .argument('<id>', 'batch id')
    .option('--output <dir>', 'directory to write into (default: ./BATCH_ID)')
    .action(
      action(async (id: string, options: { output?: string }, command: Command) => {
        const { client } = connection(command);
        const found = await client.batches.retrieve(id);
        if (!TERMINAL_STATUSES.has(found.status)) {
          stderr(`error: ${id} is ${found.status}; its files are written when it ends (batch wait ${id} --output DIR)`);
          return ExitCode.apiError;
        }
        stderr(`wrote ${(await downloadResults(client, found, options.output ?? id)).join(', ')}`);
        return ExitCode.ok;
      }),
    );

  batch
    .command('list')
    .description("list the project's batches, newest first")
    .addOption(new Option('--limit <n>', 'how many (1..100)').argParser(parseLimit).default(20))
    .option('--after <id>', 'start after this batch id (the last one of the previous page)')
    .option('--json', 'print the Batch objects as JSON')
    .action(
      action(async (options: ListFlags, command: Command) => {
        const page = await connection(command).client.batches.list({
          limit: options.limit,
          ...(options.after ? { after: options.after } : {}),
        });
        stdout(options.json ? JSON.stringify(page.data, null, 2) : batchTable(page.data));
        const last = page.data.at(-1);
        if (page.has_more && last) stderr(`more: batch list --after ${last.id}`);
        return ExitCode.ok;
      }),
    );

  batch
    .command('cancel')
    .description('cancel a batch: unrun requests end in the error file as batch_cancelled')
    .argument('<id>', 'batch id')
    .option('--wait', 'wait until it has ended (exit code by its final status)')
    .option('--output <dir>', 'then download its files into dir (implies --wait)')
    .addOption(pollOption())
    .action(
      action(async (id: string, options: CancelFlags, command: Command) => {
        const { client } = connection(command);
        const cancelling = await client.batches.cancel(id);
        stdout(`${cancelling.id} ${cancelling.status}`);
        if (!options.wait && !options.output) return ExitCode.ok;
        return waitThenFetch(client, id, options);
      }),
    );

  batch
    .command('retry')
    .description('run the failed lines of an ended batch again as a new batch (its input built by the service); prints the new batch id')
    .argument('<id>', 'batch id')
    .option(
      '--codes <code...>',
      'which failed lines: HTTP statuses (429, 5xx) and error codes (batch_expired); default 408 409 429 5xx batch_expired batch_cancelled',
    )
    .option('--wait', 'wait for the new batch to end with progress, then download its files (exit code by status)')
    .option('--output <dir>', 'where --wait writes its files (default: ./NEW_BATCH_ID; implies --wait)')
    .addOption(pollOption())
    .action(
      action(async (id: string, options: CancelFlags & { codes?: string[] }, command: Command) => {
        const selection = retrySelection(options.codes);
        const { client } = connection(command);
        const retry = await retryBatch(client, id, selection);
        stdout(retry.id);
        stderr(`${retry.id} retries the failed lines of ${id}`);
        return followIfAsked(client, retry.id, options);
      }),
    );

  batch
    .command('results')
    .description('print the result lines recorded so far as JSONL (also while the batch runs), or the one of a custom_id')
    .argument('<id>', 'batch id')
    .option('--custom-id <custom_id>', 'only the result line of this custom_id')
    .action(
      action(async (id: string, options: { customId?: string }, command: Command) => {
        const { client } = connection(command);
        if (options.customId !== undefined) {
          stdout(JSON.stringify(await resultOf(client, id, options.customId)));
          return ExitCode.ok;
        }
        const count = await eachResult(client, id, (line) => stdout(JSON.stringify(line)));
        stderr(`${count} result lines so far`);
        return ExitCode.ok;
      }),
    );

  batch
    .command('csv2jsonl')
    .description('turn CSV rows custom_id,content into request lines (a first row custom_id,... is a header)')
    .argument('<in>', 'CSV file, or - for stdin')
    .argument('[out]', 'JSONL file (default: stdout)')
    .requiredOption('--model <model>', 'model of every request')
    .option('--endpoint <endpoint>', `chat, completions, embeddings or responses (or its /v1 path)`, 'chat')
    .action(
      action(async (input: string, output: string | undefined, options: { model: string; endpoint: string }) => {
        await csvToJsonl(input, output, { model: options.model, endpoint: options.endpoint });
        return ExitCode.ok;
      }),
    );

  batch
    .command('jsonl2csv')
    .description('turn result lines (output or error file) into CSV: custom_id,status_code,content,usage,error_code,error_message')
    .argument('<in>', 'JSONL file, or - for stdin')
    .argument('[out]', 'CSV file (default: stdout)')
    .option('--bom', 'start with a UTF-8 byte order mark (for spreadsheet programs)')
    .action(
      action(async (input: string, output: string | undefined, options: { bom?: boolean }) => {
        await jsonlToCsv(input, output, { bom: options.bom });
        return ExitCode.ok;
      }),
    );

  return batch;
}

async function main(argv: string[]): Promise<number> {
  const cli = program();
  try {
    await cli.parseAsync(argv);
    return outcome;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EPIPE') return ExitCode.ok;
    if (error instanceof Interrupted) {
      stderr(error.message);
      return ExitCode.interrupted;
    }
    const failure = describeFailure(error, baseUrlOf(cli.opts<ConnectionOptions>()));
    if (failure.line) stderr(failure.line);
    return failure.code;
  }
}

// A reader that stops early (`batch jsonl2csv out.jsonl | head`) is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(ExitCode.ok);
});

process.exitCode = await main(process.argv);
