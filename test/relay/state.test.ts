import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmdirSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient } from '../../src/api/client';
import { Logger, LogLevel, silentLogger } from '../../src/log';
import { MessageType } from '../../src/protocol/message';
import { RelayConfigError } from '../../src/relay/errors';
import { hashToken } from '../../src/relay/store/rules';
import { startRelay } from '../../src/relay/server';
import { startRelayCli } from './cli-run';
import { EventLog } from './events';
import { journalLine, journalLines, sumOf } from './journal-lines';
import { connectReady } from './peer';

const { STREAM_START } = MessageType;
const CLIENT_TOKEN = 'c'.repeat(32);

interface Ctx { dir: string; statePath: string }
const state = suite<Ctx>('relay --state file');

state.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'relay-state-'));
  ctx.statePath = join(ctx.dir, 'state.json');
});
state.after.each((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

/** The tunnel records of a journal, replayed. */
function records(path: string): Map<string, Record<string, unknown>> {
  return journalLines(path).live;
}

async function startError(options: Parameters<typeof startRelay>[0]): Promise<Error> {
  const err = await startRelay({ port: 0, tls: 'plain', log: silentLogger(), ...options }).then(
    async (relay) => { await relay.close(); return undefined; },
    (e: Error) => e,
  );
  if (!err) throw new Error('the relay started');
  return err;
}

/** A record as the relay writes it, for hand-made state files. */
function record(overrides: Record<string, unknown> = {}) {
  const now = Date.now();
  return {
    tunnelId: '00000000-0000-4000-8000-000000000001',
    tunnelArn: 'arn:aws:iot:local:000000000000:tunnel/00000000-0000-4000-8000-000000000001',
    status: 'OPEN',
    services: ['SSH'],
    tags: [],
    lifetimeMinutes: 60,
    createdAt: now,
    lastUpdatedAt: now,
    source: { tokenHash: hashToken('source-token'), consumed: false, connected: false, lastUpdatedAt: now },
    destination: { tokenHash: hashToken('destination-token'), consumed: false, connected: false, lastUpdatedAt: now },
    ...overrides,
  };
}

state('a change appends one line: with 2,000 tunnels, OpenTunnel neither rewrites the file nor writes more than its own record (issue 16: 46 ms and a whole-file rewrite per call)', async (ctx) => {
  const relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  try {
    await Promise.all(Array.from({ length: 2000 }, (_, i) => relay.openTunnel({ services: ['SSH'], description: `tunnel ${i}` })));
    await relay.flush();
    const before = statSync(ctx.statePath);
    await relay.openTunnel({ services: ['SSH'], description: 'one more' });
    await relay.flush();
    const after = statSync(ctx.statePath);
    assert.is(after.ino, before.ino, 'the file was rewritten');
    const added = after.size - before.size;
    assert.ok(added > 0 && added < 1024, `appended ${added} bytes`);
    assert.is(journalLines(ctx.statePath).puts.at(-1)!.description, 'one more');
  } finally {
    await relay.close();
  }
  // And the 2,001 tunnels are all there after a restart.
  const again = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  try {
    assert.is(again.stats().openTunnels, 2001);
  } finally {
    await again.close();
  }
});

state('the journal is compacted: 3,000 open-and-delete cycles leave a file the size of what is live', async (ctx) => {
  const relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  try {
    const kept = await relay.openTunnel({ services: ['SSH'] });
    for (let i = 0; i < 3000; i++) {
      const t = await relay.openTunnel({ services: ['SSH'] });
      await relay.closeTunnel(t.tunnelId, { delete: true });
      if (i % 100 === 0) await relay.flush();
    }
    await relay.flush();
    const size = statSync(ctx.statePath).size;
    // Each cycle appends about 1 KiB; unbounded, that would be 3 MiB.
    assert.ok(size < 200 * 1024, `state file is ${size} bytes`);
    assert.equal([...records(ctx.statePath).keys()], [kept.tunnelId]);
  } finally {
    await relay.close();
  }
});

state('an OpenTunnel the API answered survives the relay being killed at once (SIGKILL)', async (ctx) => {
  const credentials = { accessKeyId: 'AKIDSTATE', secretAccessKey: 'state-secret' };
  const env = { LOCALPROXY_RELAY_ACCESS_KEY_ID: credentials.accessKeyId, LOCALPROXY_RELAY_SECRET_ACCESS_KEY: credentials.secretAccessKey };
  const args = ['--listen', '127.0.0.1:0', '--plain', '--state', ctx.statePath];
  const first = await startRelayCli(args, env);
  const client = new TunnelApiClient({ endpoint: first.url.replace('ws:', 'http:'), region: 'eu-west-1', credentials });
  const opened: string[] = [];
  for (let i = 0; i < 5; i++) opened.push((await client.call<{ tunnelId: string }>('OpenTunnel', {})).tunnelId);
  first.child.kill('SIGKILL');
  await new Promise((resolve) => first.child.once('close', resolve));
  const second = await startRelayCli(args, env);
  try {
    const client2 = new TunnelApiClient({ endpoint: second.url.replace('ws:', 'http:'), region: 'eu-west-1', credentials });
    for (const tunnelId of opened) {
      const { tunnel } = await client2.call<{ tunnel: { status: string } }>('DescribeTunnel', { tunnelId });
      assert.is(tunnel.status, 'OPEN');
    }
  } finally {
    await second.stop();
  }
});

state('a connect appends the spent token; a disconnect writes nothing (a write per event is costly on SD cards)', async (ctx) => {
  const events = new EventLog();
  const relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger(), onEvent: events.onEvent });
  try {
    const t = await relay.openTunnel({ services: ['SSH'] });
    await relay.flush();
    const opened = statSync(ctx.statePath).size;
    const src = await connectReady(relay, t.sourceAccessToken);
    await relay.flush();
    const connected = statSync(ctx.statePath).size;
    assert.ok(connected > opened, 'the consumed token was written');
    assert.is((records(ctx.statePath).get(t.tunnelId)!.source as { consumed: boolean }).consumed, true);
    src.terminate();
    await events.waitFor('disconnected', (e) => e.tunnelId === t.tunnelId);
    await relay.flush();
    assert.is(statSync(ctx.statePath).size, connected, 'a disconnect wrote the state file');
  } finally {
    await relay.close();
  }
});

state('a write that fails is one error line, never a crash: peers still connect, the API does not confirm an open it could not save, and the next good write is logged', async (ctx) => {
  const logLines: string[] = [];
  const credentials = { accessKeyId: 'AKIDSTATE', secretAccessKey: 'state-secret' };
  // The tunnel comes from the state file: an open in process, as through the API, is taken back when it cannot be saved.
  const first = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  const t = await first.openTunnel({ services: ['SSH'] });
  await first.close();
  const relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, credentials, log: new Logger({ level: LogLevel.INFO, sink: (line) => logLines.push(line) }) });
  try {
    // A directory where the file was: every append and every rewrite fails, as on a full disk.
    unlinkSync(ctx.statePath);
    mkdirSync(ctx.statePath);
    // Binding the client token is the first change to write.
    const src = await connectReady(relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
    await relay.flush().then(() => assert.unreachable('the write succeeded'), () => {});
    const dst = await connectReady(relay, t.destinationAccessToken, { mode: 'destination', clientToken: CLIENT_TOKEN });
    src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' });
    assert.is((await dst.next()).type, STREAM_START);
    const client = new TunnelApiClient({ endpoint: relay.url.replace('ws:', 'http:'), region: 'us-east-1', credentials });
    const refused = await client.call('OpenTunnel', {}).then(() => undefined, (err: { status: number; type: string; message: string }) => err);
    assert.is(refused?.status, 503);
    assert.is(refused?.type, 'ServiceUnavailableException');
    assert.match(refused!.message, /cannot write state file .*state\.json.*no tunnel was opened/);
    assert.is(relay.stats().openTunnels, 1, 'the refused open was taken back');
    const failed = logLines.filter((l) => l.includes('cannot write state file'));
    assert.is(failed.length, 1, logLines.join(''));
    assert.match(failed[0], /\[error\] cannot write state file .*state\.json: .*; changes will not survive a restart/);

    rmdirSync(ctx.statePath);
    await relay.closeTunnel(t.tunnelId);
    await relay.flush();
    await Promise.all([src.waitClosed(), dst.waitClosed()]);
    assert.ok(logLines.some((l) => /\[info\] state file .* written again/.test(l)), logLines.join(''));
    // The rewrite holds the whole state, and only it.
    assert.equal([...records(ctx.statePath).values()].map((r) => [r.tunnelId, r.status]), [[t.tunnelId, 'CLOSED']]);
  } finally {
    await relay.close();
  }
});

state('a symbolic link at the state path is kept: the file it points to is written', async (ctx) => {
  const target = join(ctx.dir, 'real-state.json');
  symlinkSync(target, ctx.statePath);
  const first = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  const t = await first.openTunnel({ services: ['SSH'] });
  await first.close();
  assert.ok(lstatSync(ctx.statePath).isSymbolicLink(), 'the link was replaced by a file');
  assert.is(readlinkSync(ctx.statePath), target);
  assert.ok(records(target).has(t.tunnelId));
  const second = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  try {
    const peer = await connectReady(second, t.sourceAccessToken);
    peer.terminate();
  } finally {
    await second.close();
  }
});

/** A journal holding `entries`, as the relay writes it. */
function journal(...entries: object[]): string {
  return `{"format":3}\n${entries.map(journalLine).join('')}`;
}

const OTHER = record({ tunnelId: '00000000-0000-4000-8000-000000000002', tunnelArn: 'arn:aws:iot:local:000000000000:tunnel/00000000-0000-4000-8000-000000000002' });

async function startLogged(statePath: string): Promise<{ relay: Awaited<ReturnType<typeof startRelay>>; log: string[] }> {
  const log: string[] = [];
  const relay = await startRelay({ port: 0, tls: 'plain', statePath, log: new Logger({ level: LogLevel.INFO, sink: (line) => log.push(line) }) });
  return { relay, log };
}

/** `text` with the case of the character at `at` changed: bit 5 of an ASCII letter, one flipped bit. */
function flipCase(text: string, at: number): string {
  const c = text[at];
  return `${text.slice(0, at)}${c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase()}${text.slice(at + 1)}`;
}

state('bits flipped on disk that keep the JSON valid (a case change in a tunnel id, in a description): each line is set aside, never loaded as something else', async (ctx) => {
  const first = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  const kept = await first.openTunnel({ services: ['SSH'] });
  const hitId = await first.openTunnel({ services: ['SSH'] });
  const hitText = await first.openTunnel({ services: ['SSH'], description: 'pump house' });
  await first.close();
  let text = readFileSync(ctx.statePath, 'utf8');
  const idAt = text.indexOf(`"tunnelId":"${hitId.tunnelId}"`) + '"tunnelId":"'.length;
  const offset = [...hitId.tunnelId].findIndex((c) => /[a-f]/.test(c));
  assert.ok(idAt > 12 && offset >= 0, 'the tunnel id has a letter to flip');
  text = flipCase(text, idAt + offset);
  const flippedId = text.slice(idAt, idAt + hitId.tunnelId.length);
  text = flipCase(text, text.indexOf('pump house'));
  writeFileSync(ctx.statePath, text);

  const { relay, log } = await startLogged(ctx.statePath);
  try {
    assert.is(relay.stats().openTunnels, 1);
    await relay.tunnels.get(kept.tunnelId);
    for (const id of [hitId.tunnelId, flippedId, hitText.tunnelId]) await relay.tunnels.get(id).then(() => assert.unreachable(`tunnel ${id} loaded`), () => {});
    const damaged = log.filter((l) => l.includes('damaged'));
    assert.is(damaged.length, 1, log.join(''));
    assert.match(damaged[0], /\[error\] state file \S+state\.json: 2 damaged line\(s\) set aside in \S+state\.json\.damaged, not loaded \(line 3: checksum does not match; line 4: checksum does not match\)/);
    assert.is(readFileSync(`${ctx.statePath}.damaged`, 'utf8'), `${text.split('\n').slice(2, 4).join('\n')}\n`);
    assert.is(statSync(`${ctx.statePath}.damaged`).mode & 0o777, 0o600);
    // The journal was written again without them: the next start finds nothing damaged.
    assert.equal([...records(ctx.statePath).keys()], [kept.tunnelId]);
  } finally {
    await relay.close();
  }
});

for (const [name, bad, why] of [
  ['a line without its checksum', `${JSON.stringify({ put: record() })}\n`, /line 2: no checksum/],
  ['a line that is not JSON under a good checksum', (() => { const json = '{oops'; return `${journalLine({}).slice(0, 0)}${sumOf(json)} ${json}\n`; })(), /line 2: not JSON/],
  ['a record with a lifetime given as a string', journalLine({ put: record({ lifetimeMinutes: '60' }) }), /line 2 \(tunnel 00000000-0000-4000-8000-000000000001\): lifetimeMinutes must be an integer from 1 to 720/],
  ['a record of the wrong shape', journalLine({ put: record({ status: 'MAYBE' }) }), /line 2 \(tunnel \S+\): status must be OPEN or CLOSED/],
  ['an ARN that does not name its tunnel', journalLine({ put: record({ tunnelArn: 'arn:aws:iot:local:000000000000:tunnel/another' }) }), /tunnelArn must be arn:PARTITION:iot:REGION:ACCOUNT:tunnel\//],
  ['a token hash that is not one', journalLine({ put: record({ source: { tokenHash: 'x', consumed: false, lastUpdatedAt: 1 } }) }), /source\.tokenHash must be a SHA-256 hex digest/],
  ['an entry that is neither put nor delete', journalLine({ hello: 'world' }), /line 2: expected \{"put": tunnel\} or \{"delete": id\}/],
] as Array<[string, string, RegExp]>) {
  state(`a journal with ${name}: that line is set aside with one error line naming it; the relay starts with the others`, async (ctx) => {
    writeFileSync(ctx.statePath, `{"format":3}\n${bad}${journalLine({ put: OTHER })}`);
    const { relay, log } = await startLogged(ctx.statePath);
    try {
      assert.is(relay.stats().openTunnels, 1);
      await relay.tunnels.get(OTHER.tunnelId);
      const damaged = log.filter((l) => l.includes('damaged'));
      assert.is(damaged.length, 1, log.join(''));
      assert.match(damaged[0], why);
      assert.not.match(damaged[0].trimEnd(), /\n/);
      assert.is(readFileSync(`${ctx.statePath}.damaged`, 'utf8'), bad);
    } finally {
      await relay.close();
    }
  });
}

for (const [name, content, pattern] of [
  ['an earlier format (one JSON document)', JSON.stringify({ format: 1, tunnels: [record()] }, null, 1), /^state file \S+state\.json is in format 1, which this relay does not read \(it writes format 3\); move it away/],
  ['an earlier format (a journal without checksums)', `{"format":2}\n{"put":${JSON.stringify(record())}}\n`, /^state file \S+state\.json is in format 2, which this relay does not read/],
  ['another program\'s JSON', JSON.stringify({ hello: 'world' }), /^state file \S+state\.json: not a localproxy relay state file \(format 3\)$/],
  ['a text file', 'hello\n', /^state file \S+state\.json: not a localproxy relay state file \(format 3\)$/],
] as Array<[string, string, RegExp]>) {
  state(`a state file that is ${name}: the relay does not start, one line names the file, and the file is left as it was`, async (ctx) => {
    writeFileSync(ctx.statePath, content);
    const err = await startError({ statePath: ctx.statePath });
    assert.instance(err, RelayConfigError);
    assert.match(err.message, pattern);
    assert.not.match(err.message, /\n/);
    assert.is(readFileSync(ctx.statePath, 'utf8'), content);
  });
}

state('a torn last line (a crash mid-append) is cut off without a word; the lines before it load', async (ctx) => {
  const full = journal({ put: record() });
  writeFileSync(ctx.statePath, `${full}${journalLine({ put: OTHER }).slice(0, 100)}`);
  const { relay, log } = await startLogged(ctx.statePath);
  try {
    assert.is(relay.stats().openTunnels, 1);
    assert.is(readFileSync(ctx.statePath, 'utf8'), full);
    assert.not.ok(log.some((l) => l.includes('damaged')), log.join(''));
  } finally {
    await relay.close();
  }
});

state('a sound journal is opened as it is at start (a full disk must not keep the relay from starting); a killed relay\'s temporary file is removed', async (ctx) => {
  const text = journal({ put: record() }, { put: OTHER }, { delete: OTHER.tunnelId });
  writeFileSync(ctx.statePath, text);
  const before = statSync(ctx.statePath).ino;
  writeFileSync(`${ctx.statePath}.12345.tmp`, 'left by a relay killed mid-rewrite');
  const relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: silentLogger() });
  try {
    assert.is(statSync(ctx.statePath).ino, before, 'the journal was rewritten at start');
    assert.is(readFileSync(ctx.statePath, 'utf8'), text);
    assert.not.ok(existsSync(`${ctx.statePath}.12345.tmp`));
  } finally {
    await relay.close();
  }
});

state('a state path that is a directory, or in a directory that does not exist: the relay does not start, one line', async (ctx) => {
  mkdirSync(join(ctx.dir, 'adir'));
  const isDir = await startError({ statePath: join(ctx.dir, 'adir') });
  assert.instance(isDir, RelayConfigError);
  assert.match(isDir.message, /^state file \S+adir is not a regular file$/);
  const missing = await startError({ statePath: join(ctx.dir, 'missing', 'state.json') });
  assert.instance(missing, RelayConfigError);
  assert.match(missing.message, /^cannot write state file \S+missing.state\.json: ENOENT/);
  assert.not.match(missing.message, /\n/);
});

state.run();
