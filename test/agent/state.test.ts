/**
 * The agent's state file on a real file system: where it lives by default (systemd, XDG,
 * Windows), its modes, a round trip, and what a damaged or foreign file does.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultStateDir, StateFile, stateFileName, type KeptTunnel } from '../../src/agent/state';
import { Logger } from '../../src/log';
import { Lines } from './lines';

const test = suite<{ dir: string; lines: Lines; log: Logger; n: number }>('agent state file');

const TUNNEL: KeptTunnel = { accessToken: 'AQGAAXh-destination-token-0123456789', clientToken: 'a'.repeat(64), region: 'local', services: ['SSH'], tunnelId: '3f1c9a52-0d7e-4c55-9a43-5a1b2c3d4e5f' };

test.before((ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'lp-agent-state-'));
  ctx.n = 0;
});

test.before.each((ctx) => {
  ctx.lines = new Lines();
  ctx.log = new Logger({ level: 4, sink: ctx.lines.sink });
});

test.after((ctx) => {
  rmSync(ctx.dir, { recursive: true, force: true });
});

function fresh(ctx: { dir: string; n: number }): string {
  return join(ctx.dir, `s${++ctx.n}`, 'nested');
}

test('the default directory: $STATE_DIRECTORY (systemd), else %LOCALAPPDATA% on Windows, else $XDG_STATE_HOME, else ~/.local/state', () => {
  assert.is(defaultStateDir({ STATE_DIRECTORY: '/var/lib/localproxy:/var/lib/other', XDG_STATE_HOME: '/x' }, 'linux', '/home/pi'), '/var/lib/localproxy');
  assert.is(defaultStateDir({ XDG_STATE_HOME: '/home/pi/.state' }, 'linux', '/home/pi'), '/home/pi/.state/localproxy');
  assert.is(defaultStateDir({ XDG_STATE_HOME: 'relative' }, 'linux', '/home/pi'), '/home/pi/.local/state/localproxy', 'a relative XDG_STATE_HOME is ignored, as the spec says');
  assert.is(defaultStateDir({}, 'darwin', '/Users/pi'), '/Users/pi/.local/state/localproxy');
  assert.is(defaultStateDir({ LOCALAPPDATA: 'C:\\Users\\pi\\AppData\\Local' }, 'win32', 'C:\\Users\\pi'), join('C:\\Users\\pi\\AppData\\Local', 'localproxy'));
  assert.is(defaultStateDir({}, 'linux', ''), undefined);
  assert.is(stateFileName('pi:1'), 'agent-pi%3A1.json', 'no colon in a file name (Windows)');
});

test('save creates the directory (0700) and the file (0600); load gives back what was saved', (ctx) => {
  const dir = fresh(ctx);
  const state = new StateFile(dir, 'pi1', ctx.log);
  assert.equal(state.load(), [], 'no file yet: nothing kept, nothing said');
  state.save([TUNNEL]);
  assert.is(statSync(dir).mode & 0o777, 0o700);
  assert.is(statSync(state.path).mode & 0o777, 0o600);
  assert.equal(new StateFile(dir, 'pi1', ctx.log).load(), [TUNNEL]);
  state.save([]);
  assert.equal(new StateFile(dir, 'pi1', ctx.log).load(), [], 'a removed tunnel is gone');
  assert.not.ok(existsSync(`${state.path}.tmp`), 'no temporary file left');
  assert.is(ctx.lines.text, '');
});

test('a file readable by others is made 0600, with one line', (ctx) => {
  const dir = fresh(ctx);
  const state = new StateFile(dir, 'pi1', ctx.log);
  state.save([TUNNEL]);
  chmodSync(state.path, 0o644);
  assert.equal(state.load(), [TUNNEL]);
  assert.is(statSync(state.path).mode & 0o777, 0o600);
  assert.is(ctx.lines.count('was readable by others (mode 644): it holds access tokens; now 600'), 1);
});

test('damaged files are set aside with one line each: not JSON, another thing\'s, an invalid entry, too large', (ctx) => {
  const cases: Array<[string, RegExp]> = [
    ['{"version": 1, "thi', /is damaged \(not JSON\)/],
    [JSON.stringify({ version: 1, thingName: 'pi2', tunnels: [] }), /is damaged \(it is the state of thing pi2\)/],
    [JSON.stringify({ version: 1, thingName: 'pi1', tunnels: [{ ...TUNNEL, services: ['a b'] }] }), /is damaged \(a tunnel entry is not valid: service id "a b"/],
    [JSON.stringify({ version: 1, thingName: 'pi1', tunnels: [{ ...TUNNEL, clientToken: 'short' }] }), /is damaged \(a tunnel entry has no valid clientToken\)/],
    [JSON.stringify({ version: 2, thingName: 'pi1', tunnels: [] }), /is damaged \(version 2, expected 1\)/],
    ['x'.repeat(1024 * 1024 + 1), /is damaged \(1048577 bytes, over the 1048576-byte limit\)/],
  ];
  for (const [content, expected] of cases) {
    const lines = new Lines();
    const dir = fresh(ctx);
    const state = new StateFile(dir, 'pi1', new Logger({ level: 4, sink: lines.sink }));
    state.save([]);
    writeFileSync(state.path, content);
    assert.equal(state.load(), []);
    assert.match(lines.text, expected);
    assert.match(lines.text, /set aside as \S+\.corrupt; starting without resumed tunnels/);
    assert.is(lines.text.trim().split('\n').length, 1, lines.text);
    assert.is(readFileSync(`${state.path}.corrupt`, 'utf8'), content);
    assert.not.ok(lines.text.includes(TUNNEL.accessToken), 'no token in the line');
  }
});

test('a state that cannot be written is said on each failure (rate-limited), and the agent goes on', (ctx) => {
  const blocker = join(ctx.dir, 'a-file');
  writeFileSync(blocker, '');
  const state = new StateFile(join(blocker, 'sub'), 'pi1', ctx.log);
  state.save([TUNNEL]);
  state.save([TUNNEL]);
  assert.is(ctx.lines.count('cannot write the state file'), 2, 'limited lines, up to the burst');
  assert.match(ctx.lines.text, /ENOTDIR; tunnels will not be resumed after a restart/);
});

test.run();
