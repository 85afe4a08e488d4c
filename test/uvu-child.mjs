// Runs one uvu test file and hands its counts to test/run.mjs on file descriptor 3, as JSON,
// instead of the runner reading uvu's printed summary. uvu keeps its suites in
// globalThis.UVU_QUEUE; with UVU_DEFER set it queues them without running them, and each queued
// entry resolves to [errors or true, passed, skipped, total].
//
//   node --import tsx test/uvu-child.mjs FILE
import { writeSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

globalThis.UVU_DEFER = 1;
globalThis.UVU_QUEUE = [[null]];

const counts = { total: 0, passed: 0, skipped: 0 };
await import(pathToFileURL(process.argv[2]).href);
for (const group of globalThis.UVU_QUEUE) {
  for (const run of group.slice(1)) {
    const [errors, passed, skipped, total] = await run();
    counts.total += total;
    counts.passed += passed;
    counts.skipped += skipped;
    if (errors !== true) process.stdout.write(`\n${errors}\n`);
  }
}
process.stdout.write('\n');
writeSync(3, JSON.stringify(counts));
