/**
 * CA loading stops when its tunnel is closed: `loadCaDirectory` and `trustedCertificates` take
 * the attempt's AbortSignal and reject with its reason at the next file, instead of reading
 * every file of a large `-c` directory for a tunnel that no longer exists.
 */
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { loadCaDirectory, trustedCertificates } from '../../src/transport/ca';
import { within } from '../helpers/wait';

const test = suite<{ dir: string; files: number }>('CA loading is aborted with its tunnel');

test.before((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'lp-ca-abort-'));
  const system = readdirSync('/etc/ssl/certs').filter((name) => name.endsWith('.pem'));
  for (const name of system) copyFileSync(join('/etc/ssl/certs', name), join(ctx.dir, name));
  ctx.files = system.length;
});

test.after((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

test('the directory has enough files for a load to take many steps', (ctx) => {
  assert.ok(ctx.files >= 50, `${ctx.files} CA files in /etc/ssl/certs`);
});

test('unaborted, every certificate of the directory is loaded', async (ctx) => {
  const loaded = await loadCaDirectory(ctx.dir, new AbortController().signal);
  assert.ok(loaded.certificates.length >= 50);
  assert.equal(loaded.problems, []);
});

test('aborted before it starts: rejects with the reason, reads nothing', async (ctx) => {
  const controller = new AbortController();
  const reason = new Error('the tunnel was closed');
  controller.abort(reason);
  const outcome = await within(loadCaDirectory(ctx.dir, controller.signal).then(() => 'loaded', (err: unknown) => err), 5000, 'load settled');
  assert.is(outcome, reason);
});

test('aborted while it reads: rejects with the reason before the directory is read through', async (ctx) => {
  const controller = new AbortController();
  const reason = new Error('the tunnel was replaced');
  const load = loadCaDirectory(ctx.dir, controller.signal).then(() => 'loaded', (err: unknown) => err);
  // A few files in: the directory was listed and reading has begun.
  setImmediate(() => controller.abort(reason));
  assert.is(await within(load, 5000, 'load settled'), reason);
});

test('trustedCertificates passes the signal on: a closed tunnel\'s CA set is never built', async (ctx) => {
  const controller = new AbortController();
  const reason = new Error('closed');
  const built = trustedCertificates({ caPath: ctx.dir }, controller.signal).then(() => 'built', (err: unknown) => err);
  setImmediate(() => controller.abort(reason));
  assert.is(await within(built, 5000, 'trustedCertificates settled'), reason);
});

test('loads beyond the concurrent limit wait their turn and can be aborted while waiting; the others finish', async (ctx) => {
  const running = [loadCaDirectory(ctx.dir), loadCaDirectory(ctx.dir)];
  const controller = new AbortController();
  const reason = new Error('closed while waiting');
  const waiting = loadCaDirectory(ctx.dir, controller.signal).then(() => 'loaded', (err: unknown) => err);
  controller.abort(reason);
  assert.is(await within(waiting, 5000, 'waiting load settled'), reason);
  for (const loaded of await within(Promise.all(running), 10_000, 'running loads')) assert.ok(loaded.certificates.length >= 50);
  // The turn the aborted load never took is free: a next load runs.
  assert.ok((await within(loadCaDirectory(ctx.dir), 10_000, 'a later load')).certificates.length >= 50);
});

test.run();
