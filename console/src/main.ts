// The console: sign in with an API key, see the project's batches and their progress, cancel,
// retry, download their files; a batch's page shows its timeline, a chart of its progress and its
// results so far. It polls politely: every few seconds while something runs, rarely otherwise,
// never while the tab is hidden.
import { ApiFailure, api, type BatchObject, inWords, type ResultLine, session } from './api.js';

const RUNNING = new Set(['validating', 'in_progress', 'finalizing', 'cancelling']);
const FAST_POLL_MS = 1_000;
const SLOW_POLL_MS = 10_000;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const view = $<HTMLElement>('view');
const message = $<HTMLParagraphElement>('message');
const signInForm = $<HTMLFormElement>('sign-in');
const signOutButton = $<HTMLButtonElement>('sign-out');

type Child = Node | string | null | undefined | false;
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  for (const child of children) if (child) element.append(child);
  return element;
}

function say(text: string | undefined, kind: 'error' | 'info' = 'error'): void {
  message.hidden = !text;
  message.textContent = text ?? '';
  message.className = kind;
}

const time = (seconds: number | null | undefined) => (seconds ? new Date(seconds * 1000).toLocaleString() : '—');
const endedAt = (b: BatchObject) => b.completed_at ?? b.failed_at ?? b.expired_at ?? b.cancelled_at;
const done = (b: BatchObject) => b.request_counts.completed + b.request_counts.failed;

function eta(b: BatchObject): string {
  if (b.status !== 'in_progress' || !b.in_progress_at) return '—';
  const elapsed = Date.now() / 1000 - b.in_progress_at;
  const finished = done(b);
  if (finished === 0 || elapsed <= 0) return 'estimating…';
  const left = ((b.request_counts.total - finished) * elapsed) / finished;
  return left < 60 ? `${Math.ceil(left)} s` : left < 3600 ? `${Math.ceil(left / 60)} min` : `${(left / 3600).toFixed(1)} h`;
}

function progressBar(b: BatchObject): HTMLElement {
  const total = Math.max(b.request_counts.total, 0);
  const bar = h('div', { role: 'progressbar', 'aria-valuemin': '0', 'aria-label': `Progress of ${b.id}`, class: 'progress' }, h('span'));
  updateProgress(bar, b);
  if (total === 0) bar.setAttribute('aria-valuetext', b.status);
  return bar;
}

function updateProgress(bar: HTMLElement, b: BatchObject): void {
  const total = b.request_counts.total;
  bar.setAttribute('aria-valuemax', String(Math.max(total, 1)));
  bar.setAttribute('aria-valuenow', String(done(b)));
  bar.setAttribute('aria-valuetext', total > 0 ? `${done(b)} of ${total} requests done` : b.status);
  (bar.firstElementChild as HTMLElement).style.width = `${total > 0 ? (100 * done(b)) / total : 0}%`;
}

// ---- actions ----

async function act(label: string, work: () => Promise<void>): Promise<void> {
  try {
    say(undefined);
    await work();
  } catch (error) {
    say(`${label}: ${inWords(error)}`);
    if (error instanceof ApiFailure && error.status === 401) signOut();
  }
}

function actionButtons(b: BatchObject): HTMLElement {
  const box = h('span', { class: 'actions' });
  if (b.output_file_id) {
    const button = h('button', { type: 'button' }, 'Download output');
    button.onclick = () => act('Download failed', () => api.download(b.output_file_id!, `${b.id}_output.jsonl`));
    box.append(button);
  }
  if (b.error_file_id) {
    const button = h('button', { type: 'button' }, 'Download errors');
    button.onclick = () => act('Download failed', () => api.download(b.error_file_id!, `${b.id}_errors.jsonl`));
    box.append(button);
  }
  if (RUNNING.has(b.status) && b.status !== 'cancelling' && b.status !== 'finalizing') {
    const button = h('button', { type: 'button', 'aria-label': `Cancel ${b.id}` }, 'Cancel');
    button.onclick = () =>
      act('Cancel failed', async () => {
        button.disabled = true;
        await api.cancel(b.id);
        say(`Cancelling ${b.id}: requests in flight finish, the rest end in the error file.`, 'info');
        poll.now();
      });
    box.append(button);
  }
  if (!RUNNING.has(b.status) && b.error_file_id && !b.x_retried_by && b.status !== 'failed') {
    const button = h('button', { type: 'button', 'aria-label': `Retry ${b.id}` }, 'Retry');
    button.onclick = () =>
      act('Retry failed', async () => {
        button.disabled = true;
        const retry = await api.retry(b.id);
        say(`Retrying the failed lines of ${b.id} as ${retry.id}.`, 'info');
        location.hash = `#/batches/${retry.id}`;
      });
    box.append(button);
  }
  return box;
}

// ---- the list ----

function renderList(batches: BatchObject[]): void {
  const rows = batches.map((b) =>
    h(
      'tr',
      { 'data-batch': b.id },
      h('td', {}, h('a', { href: `#/batches/${b.id}` }, b.id)),
      h('td', { class: `status ${b.status}` }, b.status),
      h('td', {}, RUNNING.has(b.status) ? progressBar(b) : ''),
      h('td', {}, `${done(b)}/${b.request_counts.total} done, ${b.request_counts.failed} failed`),
      h('td', {}, eta(b)),
      h('td', {}, time(b.created_at)),
      h('td', {}, time(endedAt(b))),
      h('td', {}, actionButtons(b)),
    ),
  );
  const table = h(
    'table',
    { 'aria-label': 'Batches' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ...['Batch', 'Status', 'Progress', 'Requests', 'ETA', 'Created', 'Ended', ''].map((title) => h('th', { scope: 'col' }, title)),
      ),
    ),
    h('tbody', {}, ...rows),
  );
  const focused = document.activeElement?.closest('tr')?.getAttribute('data-batch');
  view.replaceChildren(h('h2', {}, 'Batches'), batches.length ? table : h('p', {}, 'This project has no batches yet.'));
  if (focused) (view.querySelector(`tr[data-batch="${CSS.escape(focused)}"] button`) as HTMLElement | null)?.focus();
}

// ---- a batch's page ----

interface Sample {
  at: number;
  done: number;
}
const samples = new Map<string, Sample[]>();
let results: { batchId: string; lines: ResultLine[]; after?: string; ended: boolean } | undefined;

function timeline(b: BatchObject): HTMLElement {
  const steps: [string, number | null][] = [
    ['created (validating)', b.created_at],
    ['in_progress', b.in_progress_at],
    ['cancelling', b.cancelling_at],
    ['finalizing', b.finalizing_at],
    ['completed', b.completed_at],
    ['failed', b.failed_at],
    ['expired', b.expired_at],
    ['cancelled', b.cancelled_at],
  ];
  const reached = steps.filter(([, at]) => at).sort((x, y) => x[1]! - y[1]!);
  return h(
    'ol',
    { class: 'timeline', 'aria-label': 'Timeline' },
    ...reached.map(([status, at]) => h('li', {}, h('strong', {}, status), ' ', h('time', {}, time(at)))),
  );
}

function chart(b: BatchObject): SVGElement {
  const points = [...(samples.get(b.id) ?? [])];
  if (b.in_progress_at) points.unshift({ at: b.in_progress_at * 1000, done: 0 });
  // An ended batch opened later has no samples of its run: its end draws the line from its start.
  const endedAt = RUNNING.has(b.status) ? null : (b.finalizing_at ?? b.completed_at ?? b.failed_at ?? b.expired_at ?? b.cancelled_at);
  if (endedAt) points.push({ at: endedAt * 1000, done: done(b) });
  points.sort((x, y) => x.at - y.at);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 300 100');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Requests done over time: ${done(b)} of ${b.request_counts.total}`);
  svg.classList.add('chart');
  const total = Math.max(b.request_counts.total, 1);
  const first = points[0]?.at ?? Date.now();
  const span = Math.max((points.at(-1)?.at ?? first) - first, 1);
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', points.map((p) => `${(300 * (p.at - first)) / span},${100 - (100 * p.done) / total}`).join(' '));
  svg.append(line);
  return svg;
}

function resultContent(line: ResultLine): string {
  if (line.error) return `${line.error.code}: ${line.error.message}`;
  const body = line.response?.body as
    | {
        choices?: { message?: { content?: string }; text?: string }[];
        data?: unknown[];
        output_text?: string;
        error?: { message?: string };
      }
    | undefined;
  const text = body?.choices?.[0]?.message?.content ?? body?.choices?.[0]?.text ?? body?.output_text ?? body?.error?.message;
  if (typeof text === 'string') return text.length > 200 ? `${text.slice(0, 200)}…` : text;
  if (Array.isArray(body?.data)) return `${body.data.length} embedding(s)`;
  return JSON.stringify(body ?? null).slice(0, 200);
}

async function loadResults(b: BatchObject): Promise<void> {
  if (results?.batchId !== b.id) results = { batchId: b.id, lines: [], ended: false };
  const ended = !RUNNING.has(b.status);
  if (ended && results.ended) return;
  for (let page = 0; page < 4 && results.lines.length < 200; page++) {
    try {
      const next = await api.results(b.id, results.after);
      results.lines.push(...next.data);
      results.after = next.next_after;
      if (!next.has_more) break;
    } catch (error) {
      // The batch ended since the last page: its results are its files now; read them from the start.
      if (error instanceof ApiFailure && error.code === 'results_moved') {
        results = { batchId: b.id, lines: [], ended: false };
        continue;
      }
      throw error;
    }
  }
  results.ended = ended;
}

function resultsTable(): HTMLElement {
  const lines = results?.lines ?? [];
  if (lines.length === 0) return h('p', {}, 'No results recorded yet.');
  return h(
    'table',
    { 'aria-label': 'Results' },
    h('thead', {}, h('tr', {}, ...['custom_id', 'status', 'content'].map((title) => h('th', { scope: 'col' }, title)))),
    h(
      'tbody',
      {},
      ...lines.map((line) =>
        h(
          'tr',
          {},
          h('td', {}, line.custom_id),
          h('td', {}, line.response ? String(line.response.status_code) : (line.error?.code ?? '')),
          h('td', {}, resultContent(line)),
        ),
      ),
    ),
  );
}

async function renderBatch(id: string): Promise<boolean> {
  let b: BatchObject;
  try {
    b = await api.batch(id);
  } catch (error) {
    if (error instanceof ApiFailure && error.status === 404) {
      view.replaceChildren(h('h2', {}, id), h('p', {}, `No batch ${id} in your project.`), h('a', { href: '#/' }, 'All batches'));
      return false;
    }
    throw error;
  }
  const list = samples.get(id) ?? [];
  if (list.at(-1)?.done !== done(b) || !RUNNING.has(b.status)) list.push({ at: Date.now(), done: done(b) });
  samples.set(id, list.slice(-500));
  await loadResults(b);
  const usage = await api.usage(id).catch(() => undefined);
  const links = h(
    'p',
    {},
    b.x_retry_of ? h('span', {}, 'Retry of ', h('a', { href: `#/batches/${b.x_retry_of}` }, b.x_retry_of), '. ') : null,
    b.x_retried_by ? h('span', {}, 'Retried by ', h('a', { href: `#/batches/${b.x_retried_by}` }, b.x_retried_by), '.') : null,
  );
  view.replaceChildren(
    h('p', {}, h('a', { href: '#/' }, '← All batches')),
    h('h2', {}, b.id),
    h(
      'dl',
      {},
      h('dt', {}, 'Status'),
      h('dd', { class: `status ${b.status}` }, b.status),
      h('dt', {}, 'Endpoint'),
      h('dd', {}, `${b.endpoint}${b.model ? ` (${b.model})` : ''}`),
      h('dt', {}, 'Requests'),
      h('dd', {}, `${done(b)}/${b.request_counts.total} done, ${b.request_counts.completed} completed, ${b.request_counts.failed} failed`),
      h('dt', {}, 'ETA'),
      h('dd', {}, eta(b)),
      h('dt', {}, 'Tokens'),
      h(
        'dd',
        {},
        usage
          ? `${usage.input_tokens} in, ${usage.output_tokens} out${usage.cost ? `, cost ${usage.cost.total} ${usage.cost.currency}` : ''}`
          : '—',
      ),
    ),
    links,
    progressBar(b),
    actionButtons(b),
    ...(b.errors?.data.length
      ? [
          h('h3', {}, 'Errors'),
          h('ul', {}, ...b.errors.data.map((e) => h('li', {}, `${e.line ? `line ${e.line}: ` : ''}${e.code}: ${e.message}`))),
        ]
      : []),
    h('h3', {}, 'Timeline'),
    timeline(b),
    h('h3', {}, 'Progress over time'),
    chart(b),
    h('h3', {}, `Results so far (${results?.lines.length ?? 0}${(results?.lines.length ?? 0) >= 200 ? '+' : ''})`),
    resultsTable(),
  );
  return RUNNING.has(b.status);
}

// ---- routing and polling ----

async function render(): Promise<boolean> {
  const batchId = /^#\/batches\/([\w-]+)$/.exec(location.hash)?.[1];
  if (batchId) return renderBatch(batchId);
  const page = await api.listBatches();
  renderList(page.data);
  return page.data.some((b) => RUNNING.has(b.status));
}

const poll = (() => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let failures = 0;
  const run = async () => {
    clearTimeout(timer);
    if (!session.key()) return;
    if (document.hidden) {
      timer = setTimeout(run, SLOW_POLL_MS);
      return;
    }
    let running = false;
    try {
      running = await render();
      failures = 0;
      if (message.className === 'error' && message.textContent?.startsWith('The service')) say(undefined);
    } catch (error) {
      failures++;
      say(inWords(error));
      if (error instanceof ApiFailure && error.status === 401) {
        signOut();
        return;
      }
    }
    // Back off while the service fails: 1 s, 2 s, 4 s … up to a minute.
    const delay = failures > 0 ? Math.min(60_000, FAST_POLL_MS * 2 ** failures) : running ? FAST_POLL_MS : SLOW_POLL_MS;
    timer = setTimeout(run, delay);
  };
  return { now: () => void run(), stop: () => clearTimeout(timer) };
})();

function signOut(): void {
  session.signOut();
  poll.stop();
  view.replaceChildren();
  signInForm.hidden = false;
  signOutButton.hidden = true;
  $<HTMLInputElement>('api-key').focus();
}

function showSignedIn(): void {
  signInForm.hidden = true;
  signOutButton.hidden = false;
  poll.now();
}

signInForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $<HTMLInputElement>('api-key');
  const key = input.value.trim();
  if (!key) return;
  try {
    await api.listBatches(key);
  } catch (error) {
    say(inWords(error));
    return;
  }
  input.value = '';
  session.signIn(key);
  say(undefined);
  showSignedIn();
});
signOutButton.addEventListener('click', () => {
  say(undefined);
  signOut();
});
window.addEventListener('hashchange', () => poll.now());
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) poll.now();
});

if (session.key()) showSignedIn();
else signOut();
