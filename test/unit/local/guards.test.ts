// The last lines of defence of `npm start` (local/guards.ts), in a process of their own: an
// uncaught exception and an unhandled rejection are logged as one line each and counted, and the
// process goes on; what libraries print with console.* becomes structured lines, stacks dropped.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../support/service-process.js';

const SCRIPT = `
import { guardProcess } from './local/guards.ts';
import { jsonLogger } from './shared/log.ts';
const guard = guardProcess(jsonLogger('debug'));
setTimeout(() => { throw new Error('thrown from a timer'); }, 0);
Promise.reject(new TypeError('rejected with no handler'));
console.error(new Error('printed by a library'));
console.info('The user aborted a request.');
setTimeout(() => {
  console.log({ escaped: guard.escapedErrors() });
  process.stdout.write('still running\\n');
}, 100);
`;

describe('the process guard', () => {
  it('logs and counts escaped errors instead of exiting, and keeps console output structured', async () => {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', SCRIPT], {
      cwd: REPO_ROOT,
    });
    expect(stderr).toBe('');
    const lines = stdout.trim().split('\n');
    expect(lines.pop()).toBe('still running');
    const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(logged).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ level: 'error', origin: 'uncaughtException', error: 'Error: thrown from a timer' }),
        expect.objectContaining({ level: 'error', origin: 'unhandledRejection', error: 'TypeError: rejected with no handler' }),
        expect.objectContaining({ level: 'error', text: 'Error: printed by a library' }),
        expect.objectContaining({ level: 'info', text: 'The user aborted a request.' }),
        expect.objectContaining({ level: 'info', text: '{ escaped: 2 }' }),
      ]),
    );
    expect(stdout).not.toMatch(/\n\s+at /);
  });
});
