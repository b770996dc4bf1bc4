#!/usr/bin/env node
// rppd runs from its TypeScript sources through tsx's loader (no build step).
import { setFlagsFromString } from 'node:v8';
import { register } from 'tsx/esm/api';

// A long-running node's live heap is small (~30 MiB) but V8 lets the old generation grow to
// several times that before a full collection: a draining node sat at ~300 MiB resident. Growing
// it by what is live keeps it near 200 MiB (bench W6). 50 % was tighter still but made V8 finish
// collections in one pause: commit→start p99 went from 11 to 40-240 ms (bench W3).
// Read at every collection, so setting it here, before the heap grows, takes effect.
if (!process.execArgv.some((a) => a.startsWith('--heap-growing-percent'))) {
  setFlagsFromString('--heap-growing-percent=100');
}
register();
await import('../src/cli/main.ts');
