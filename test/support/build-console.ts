// vitest's global setup: builds the console (npm run build:console) when its build is missing or
// older than its sources, since the service imports the build (dist/console-assets.json).
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './service-process.js';

const mtime = (file: string) => {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return undefined;
  }
};

export default function setup(): void {
  const built = mtime(path.join(REPO_ROOT, 'dist/console-assets.json'));
  const sources = readdirSync(path.join(REPO_ROOT, 'console'), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => mtime(path.join(entry.parentPath, entry.name)) ?? 0);
  if (built !== undefined && sources.every((time) => time <= built)) return;
  execFileSync('npm', ['run', '--silent', 'build:console'], { cwd: REPO_ROOT, stdio: 'inherit' });
}
