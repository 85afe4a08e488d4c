// The C++ reference kept in test/peers/ is the binary its README describes: the interop,
// conformance and bench results mean nothing against a different build.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

const peers = suite('test peers');
const dir = new URL('./cpp-localproxy/', import.meta.url).pathname;

peers('the C++ reference has the sha256 recorded in SHA256SUMS', () => {
  const [expected, name] = readFileSync(join(dir, 'SHA256SUMS'), 'utf8').trim().split(/\s+/);
  assert.is(name, 'localproxy');
  assert.is(createHash('sha256').update(readFileSync(join(dir, 'localproxy'))).digest('hex'), expected);
});

peers('the C++ reference kept here is v3.3.1+8a71618', () => {
  const out = execFileSync(join(dir, 'localproxy'), ['--version'], { encoding: 'utf8', timeout: 10_000 });
  assert.match(out, /version: v3\.3\.1\+8a71618/);
});

peers('its licence files sit beside it', () => {
  for (const file of ['LICENSE', 'NOTICE', 'THIRD_PARTY_LICENSES']) assert.ok(readFileSync(join(dir, file), 'utf8').length > 0, file);
  assert.match(readFileSync(join(dir, 'THIRD_PARTY_LICENSES'), 'utf8'), /Boost[\s\S]*Protocol Buffers[\s\S]*OpenSSL/);
});

peers.run();
