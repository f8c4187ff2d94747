#!/usr/bin/env node
// The `batch` command. It runs a bundle of cli/main.ts (dist/cli/batch.mjs), which esbuild builds on
// first use and again whenever one of its sources is newer: starting from the bundle takes half the
// time or less of compiling the TypeScript with tsx on every run. Where the bundle cannot be
// written (a read-only checkout), the TypeScript runs through tsx.
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const entry = fileURLToPath(new URL('main.ts', import.meta.url));
const bundle = fileURLToPath(new URL('../dist/cli/batch.mjs', import.meta.url));
const inputsFile = `${bundle}.inputs.json`;

const mtime = (file) => {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
};

function bundleIsCurrent() {
  try {
    const built = statSync(bundle).mtimeMs;
    const inputs = JSON.parse(readFileSync(inputsFile, 'utf8'));
    return inputs.every((input) => mtime(new URL(input, pathToFileURL(root)).pathname) <= built);
  } catch {
    return false;
  }
}

async function buildBundle() {
  const { build } = await import('esbuild');
  const partial = `${bundle}.${process.pid}.partial`;
  mkdirSync(new URL('.', pathToFileURL(bundle)), { recursive: true });
  const result = await build({
    entryPoints: [entry],
    absWorkingDir: root,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile: partial,
    metafile: true,
    logLevel: 'silent',
  });
  // Several commands may start at once: each writes its own file and renames it into place.
  writeFileSync(`${inputsFile}.${process.pid}`, JSON.stringify(Object.keys(result.metafile.inputs)));
  renameSync(`${inputsFile}.${process.pid}`, inputsFile);
  renameSync(partial, bundle);
}

let useBundle = bundleIsCurrent();
if (!useBundle) {
  try {
    await buildBundle();
    useBundle = true;
  } catch {
    useBundle = false;
  }
}
if (useBundle) {
  await import(pathToFileURL(bundle).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(entry).href);
}
