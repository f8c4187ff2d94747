// cfn-lint (AWS's CloudFormation linter: resource schemas, property values, intrinsic functions,
// IAM policy grammar) on the synthesized templates, the default configuration and a full one.
// cfn-lint is on this project's machines, not on a user's: skipped with one line where it is absent.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BatchServiceProps } from '../../infra/config.js';
import { FULL_PROPS, synthesize } from './support.js';

const CFN_LINT = (() => {
  const found = spawnSync('sh', ['-c', 'command -v cfn-lint'], { encoding: 'utf8' });
  return found.status === 0 && found.stdout.trim() ? found.stdout.trim() : undefined;
})();

interface Finding {
  Level: 'Error' | 'Warning' | 'Informational';
  Rule: { Id: string };
  Message: string;
  Location: { Path: (string | number)[] };
}

async function lint(props: BatchServiceProps): Promise<Finding[]> {
  const dir = await mkdtemp(join(tmpdir(), 'cfn-lint-'));
  try {
    const file = join(dir, 'template.json');
    await writeFile(file, JSON.stringify(synthesize(props, { nag: false }).template.toJSON(), null, 1));
    const run = spawnSync(CFN_LINT!, ['--format', 'json', '--', file], { encoding: 'utf8', timeout: 300_000 });
    if (run.error) throw run.error;
    return JSON.parse(run.stdout || '[]') as Finding[];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const SKIPPED = 'cfn-lint is not on PATH: the synthesized templates are not linted';
const describeIf = (what: string) => {
  if (CFN_LINT) return describe(what, body);
  console.warn(SKIPPED);
  it.skip(SKIPPED, () => undefined);
};
function body() {
  const errorsOf = (findings: Finding[]) =>
    findings.filter((f) => f.Level === 'Error').map((f) => `${f.Rule.Id} at ${f.Location.Path.join('.')}: ${f.Message}`);
  it('finds no error in the default configuration', async () => {
    expect(errorsOf(await lint({}))).toEqual([]);
  }, 300_000);
  it('finds no error in a full configuration (routes, created and named secrets, schedules, alarm email)', async () => {
    expect(errorsOf(await lint(FULL_PROPS))).toEqual([]);
  }, 300_000);
}
describeIf('cfn-lint on the synthesized templates');
