#!/usr/bin/env node
// Bundles the compiled CLI (dist/src) into dist/bundle with esbuild: one file per command plus
// shared chunks, instead of ~150 small ES modules that Node resolves, reads and compiles one by
// one at every start (Node 20 has no module compile cache). `vmvault mount` reaches its first
// byte ~40 ms sooner. The codec worker is its own entry, next to the chunks that start it
// (`new URL('./codec-worker.js', import.meta.url)`); native addons stay outside the bundle.
// bin/vmvault runs the bundle when it is newer than dist/src, else dist/src directly.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

// Chunk names carry content hashes: without a clean start, every build would leave the last
// build's chunks behind.
rmSync('dist/bundle', { recursive: true, force: true });

await build({
  entryPoints: ['dist/src/cli/main.js', 'dist/src/repository/codec-worker.js'],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir: 'dist/bundle',
  entryNames: '[name]',
  external: ['better-sqlite3', 'zstd-napi', 'zstd-napi/*'],
  logLevel: 'warning',
});
