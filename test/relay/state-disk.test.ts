/**
 * The `--state` journal on a full disk: a real 300 KiB tmpfs (mounted here, so these tests run
 * as root). What the API confirmed survives SIGKILL, what it refused is nowhere, no record is
 * torn in the middle of the file, and a relay restarted on the still-full disk starts.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient, type ApiError } from '../../src/api/client';
import { Logger, LogLevel } from '../../src/log';
import { startRelay } from '../../src/relay/server';
import { startRelayCli } from './cli-run';
import { journalLines } from './journal-lines';

const CREDENTIALS = { accessKeyId: 'AKIDDISK', secretAccessKey: 'disk-secret' };
const ENV = { LOCALPROXY_RELAY_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, LOCALPROXY_RELAY_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey };

interface Ctx { dir: string; statePath: string }
const disk = suite<Ctx>('relay --state on a full disk');

disk.before.each((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'relay-disk-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=300k', 'tmpfs', ctx.dir]);
  ctx.statePath = join(ctx.dir, 'state.json');
});

disk.after.each((ctx) => {
  try {
    execFileSync('umount', [ctx.dir], { stdio: 'pipe' });
  } catch {
    // Still busy (a failed test left a file open): detached now, gone once closed.
    execFileSync('umount', ['-l', ctx.dir]);
  }
  rmdirSync(ctx.dir);
});

/** A description of 2,000 characters, different for each tunnel. */
function description(i: number): string {
  return `tunnel ${i} `.padEnd(2000, 'abcdefghij');
}

async function listAll(client: TunnelApiClient): Promise<string[]> {
  const ids: string[] = [];
  let nextToken: string | undefined;
  do {
    const page = await client.call<{ tunnelSummaries: Array<{ tunnelId: string }>; nextToken?: string }>('ListTunnels', { maxResults: 100, ...(nextToken ? { nextToken } : {}) });
    ids.push(...page.tunnelSummaries.map((t) => t.tunnelId));
    nextToken = page.nextToken;
  } while (nextToken);
  return ids;
}

disk('200 OpenTunnel calls with 2,000-character descriptions fill the disk; after SIGKILL every tunnel answered 200 comes back whole, and nothing else', async (ctx) => {
  const args = ['--listen', '127.0.0.1:0', '--plain', '--state', ctx.statePath];
  const first = await startRelayCli(args, ENV);
  const confirmed = new Map<string, string>();
  let refused = 0;
  try {
    const client = new TunnelApiClient({ endpoint: first.url.replace('ws:', 'http:'), region: 'eu-west-1', credentials: CREDENTIALS });
    // Ten calls at a time, so that changes share writes as they do under load.
    for (let i = 0; i < 200; i += 10) {
      await Promise.all(Array.from({ length: 10 }, async (_, j) => {
        const text = description(i + j);
        try {
          const { tunnelId } = await client.call<{ tunnelId: string }>('OpenTunnel', { description: text });
          confirmed.set(tunnelId, text);
        } catch (err) {
          assert.is((err as ApiError).status, 503, String(err));
          assert.is((err as ApiError).type, 'ServiceUnavailableException');
          refused++;
        }
      }));
    }
  } finally {
    first.child.kill('SIGKILL');
    await new Promise((resolve) => first.child.once('close', resolve));
  }
  assert.ok(refused > 0, 'the disk never filled up');
  assert.ok(confirmed.size > 20, `only ${confirmed.size} tunnels were confirmed`);

  const second = await startRelayCli(args, ENV);
  try {
    const client = new TunnelApiClient({ endpoint: second.url.replace('ws:', 'http:'), region: 'eu-west-1', credentials: CREDENTIALS });
    assert.equal((await listAll(client)).sort(), [...confirmed.keys()].sort(), 'the tunnels after the restart are exactly the confirmed ones');
    for (const [tunnelId, text] of confirmed) {
      const { tunnel } = await client.call<{ tunnel: { status: string; description: string } }>('DescribeTunnel', { tunnelId });
      assert.is(tunnel.status, 'OPEN');
      assert.is(tunnel.description, text);
    }
    assert.not.ok(existsSync(`${ctx.statePath}.damaged`), 'lines were set aside as damaged');
  } finally {
    await second.stop();
  }
});

disk('an append the disk has no room for is cut back to the last whole line, and the first write with room again holds what the relay holds', async (ctx) => {
  const logLines: string[] = [];
  const relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, log: new Logger({ level: LogLevel.INFO, sink: (line) => logLines.push(line) }) });
  const filler = join(ctx.dir, 'filler');
  try {
    // Most of the room taken, so that appends run out of it before a rewrite is due.
    writeFileSync(filler, Buffer.alloc(200 * 1024));
    const opened: string[] = [];
    let failures = 0;
    for (let i = 0; i < 60 && failures < 3; i++) {
      try {
        opened.push((await relay.tunnels.open({ description: description(i) })).tunnelId);
      } catch (err) {
        assert.match((err as Error).message, /cannot write state file .*(ENOSPC|short write)/);
        failures++;
        // Nothing torn is left at the end of the file, and every line there is whole and sound.
        const text = readFileSync(ctx.statePath, 'utf8');
        assert.ok(text.endsWith('\n'), `the file ends in a torn line after failure ${failures}`);
        assert.equal(journalLines(ctx.statePath).puts.map((p) => p.tunnelId).filter((id) => !opened.includes(id)), [], 'a refused tunnel is in the file');
      }
    }
    assert.is(failures, 3, 'the disk never filled up');
    assert.is(logLines.filter((l) => l.includes('cannot write state file')).length, 1, logLines.join(''));
    unlinkSync(filler);
    const after = await relay.tunnels.open({ description: 'room again' });
    opened.push(after.tunnelId);
    assert.ok(logLines.some((l) => /state file .* written again/.test(l)), logLines.join(''));
    assert.equal([...journalLines(ctx.statePath).live.keys()].sort(), [...opened].sort());
  } finally {
    await relay.close();
  }
});

disk.run();
