/**
 * The systemd units of docs/deploy/: each is checked by `systemd-analyze verify` (which needs no
 * running systemd, but wants the ExecStart program to exist: the built linux-x64 executable
 * stands in for /usr/local/bin/localproxy) and scored by `systemd-analyze security --offline`,
 * and each unit's command line is run with that executable the way systemd would start it:
 * specifiers %S and %d resolved, the environment file read, $STATE_DIRECTORY set.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { makePki } from '../transport/fixtures';
import { freePort } from '../helpers/wait';
import { executable, platforms, Program, root } from './harness';

const test = suite('dist: systemd units (docs/deploy), verified and run with the executable');
const unitsDir = join(root, 'docs', 'deploy');
const UNITS = readdirSync(unitsDir).filter((f) => f.endsWith('.service')).sort();
const INSTALLED = '/usr/local/bin/localproxy';
const MS = 30_000;
const work = mkdtempSync(join(tmpdir(), 'localproxy-units-'));

test.after(() => {
  rmSync(work, { recursive: true, force: true });
});

/** The unit with ExecStart pointing at the built executable, in a directory of its own. */
function installed(unit: string, edit: (text: string) => string = (t) => t): string {
  const dir = mkdtempSync(join(work, 'unit-'));
  const path = join(dir, unit);
  writeFileSync(path, edit(readFileSync(join(unitsDir, unit), 'utf8')).split(INSTALLED).join(executable(platforms['linux-x64']!)));
  return path;
}

function analyze(args: string[], unitPath: string): { status: number | null; output: string } {
  const result = spawnSync('systemd-analyze', [...args, unitPath], { cwd: join(unitPath, '..'), encoding: 'utf8', timeout: MS });
  return { status: result.status, output: `${result.stdout}${result.stderr}`.trim() };
}

/** [Service] settings, continuation lines joined; repeated keys keep every value. */
function serviceSettings(unit: string): Map<string, string[]> {
  const text = readFileSync(join(unitsDir, unit), 'utf8').replace(/\\\n\s*/g, '');
  const settings = new Map<string, string[]>();
  let section = '';
  for (const line of text.split('\n')) {
    if (/^\[.*\]$/.test(line)) section = line;
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (section === '[Service]' && m) settings.set(m[1]!, [...(settings.get(m[1]!) ?? []), m[2]!]);
  }
  return settings;
}

test('three units: the relay, the agent and a destination proxy', () => {
  assert.equal(UNITS, ['localproxy-agent.service', 'localproxy-destination.service', 'localproxy-relay.service']);
});

for (const unit of UNITS) {
  test(`${unit}: systemd-analyze verify finds nothing, and its security exposure is at most 2.0 of 10`, () => {
    const verified = analyze(['verify', '--man=no'], installed(unit));
    assert.is(verified.status, 0, verified.output);
    assert.is(verified.output, '', 'no warning either (an unknown key is only a warning)');
    const security = analyze(['security', '--offline=yes', '--threshold=20'], installed(unit));
    assert.is(security.status, 0, security.output);
    assert.match(security.output, /Overall exposure level for \S+: (0\.\d|1\.\d|2\.0) /);
    // The check can fail: a misspelt hardening line is reported.
    const misspelt = analyze(['verify', '--man=no'], installed(unit, (t) => t.replace('ProtectSystem=strict', 'ProtectSystm=strict')));
    assert.match(misspelt.output, "Unknown key 'ProtectSystm'");
  });

  test(`${unit}: hardened (DynamicUser, ProtectSystem=strict, StateDirectory, no capabilities, Restart=on-failure), V8 still allowed to compile`, () => {
    const s = serviceSettings(unit);
    for (const [key, value] of [['DynamicUser', 'yes'], ['ProtectSystem', 'strict'], ['Restart', 'on-failure'], ['NoNewPrivileges', 'yes'], ['CapabilityBoundingSet', ''], ['UMask', '0077'], ['SystemCallFilter', '@system-service']]) {
      assert.equal(s.get(key!), [value], `${key}=${value}`);
    }
    assert.ok(s.get('StateDirectory')?.[0], 'StateDirectory=');
    assert.ok(s.get('RestartPreventExitStatus')?.[0]?.split(' ').includes('2'), 'a configuration error (exit 2) is not restarted');
    assert.not.ok(s.has('MemoryDenyWriteExecute'), 'MemoryDenyWriteExecute=yes stops Node at start');
  });
}

/** The unit's ExecStart as systemd runs it: %S (the state root) and %d (the credentials) resolved. */
function commandLine(unit: string, state: string, credentials: string): string[] {
  const exec = serviceSettings(unit).get('ExecStart')![0]!;
  return exec.split(/\s+/).filter(Boolean).map((word) => word.replace(/%S/g, state).replace(/%d/g, credentials));
}

function startUnit(unit: string, rewrite: (args: string[]) => string[], env: NodeJS.ProcessEnv): Program {
  const [program, ...args] = rewrite(commandLine(unit, join(work, 'state'), join(work, 'credentials', unit)));
  assert.is(program, INSTALLED);
  return new Program(executable(platforms['linux-x64']!), args, { PATH: process.env.PATH, ...env }, false);
}

async function stopped(program: Program): Promise<void> {
  const { code, signal } = await program.stop('SIGTERM', MS);
  assert.equal({ code, signal }, { code: 0, signal: null }, `SIGTERM ends it with exit 0:\n${program.stderr}`);
}

test('localproxy-relay.service: its command line serves (on a free port here), makes its certificate in the state directory, answers the health check', async () => {
  const port = await freePort();
  const stateDir = join(work, 'state', serviceSettings('localproxy-relay.service').get('StateDirectory')![0]!);
  mkdirSync(stateDir, { recursive: true });
  const relay = startUnit('localproxy-relay.service', (args) => args.map((a) => a.replace('0.0.0.0:8443', `127.0.0.1:${port}`)),
    { STATE_DIRECTORY: stateDir, LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDUNIT', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'unit-secret' });
  try {
    await relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:\d+/, MS, 'relay listening');
    // The certificate made in the state directory names what the unit's --tls-name says.
    assert.ok(new X509Certificate(readFileSync(join(stateDir, 'certs', 'cert.pem'))).checkHost('relay.example.com'));
    const health = spawnSync(executable(platforms['linux-x64']!), ['relay', '--health-check', `https://127.0.0.1:${port}`], { encoding: 'utf8', timeout: MS });
    assert.is(health.status, 0, health.stderr);
  } finally {
    await stopped(relay);
  }
});

test('localproxy-destination.service: its command line with the environment file\'s token and endpoint tries the service', async () => {
  const closed = await freePort();
  const destination = startUnit('localproxy-destination.service', (args) => args, { AWSIOT_TUNNEL_ACCESS_TOKEN: 'AQGAAXunit-test-token', AWSIOT_TUNNEL_ENDPOINT: `127.0.0.1:${closed}` });
  try {
    await destination.waitFor(/Attempting to establish web socket connection with endpoint wss:\/\/127\.0\.0\.1:\d+/, MS, 'destination connecting');
    // Its first attempt has failed (nothing listens): it is running, with its signal handlers.
    await destination.waitFor(/Could not connect to proxy server/, MS, 'the first attempt refused');
    assert.not.match(destination.stderr, 'AQGAAXunit-test-token');
  } finally {
    await stopped(destination);
  }
});

test('localproxy-agent.service: its command line reads the credentials (LoadCredential, %d) and keeps its state in $STATE_DIRECTORY', async () => {
  const settings = serviceSettings('localproxy-agent.service');
  const credentials = join(work, 'credentials', 'localproxy-agent.service');
  mkdirSync(credentials, { recursive: true });
  const pki = makePki('units test CA');
  try {
    for (const line of settings.get('LoadCredential')!) {
      const name = line.slice(0, line.indexOf(':'));
      copyFileSync(name.endsWith('.key') ? join(pki.dir, 'leaf.key') : name.startsWith('broker-ca') ? pki.caFile : join(pki.dir, 'leaf.pem'), join(credentials, name));
    }
    const stateDir = join(work, 'state', settings.get('StateDirectory')![0]!);
    mkdirSync(stateDir, { recursive: true });
    // The broker address is the unit's placeholder, which resolves nowhere: the agent keeps trying.
    const agent = startUnit('localproxy-agent.service', (args) => args, { STATE_DIRECTORY: stateDir });
    try {
      await agent.waitFor(new RegExp(`state in ${stateDir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}/agent-pi1\\.json`), MS, 'agent started');
      await agent.waitFor(/mqtt: cannot connect to mqtts:\/\/PREFIX-ats/, MS, 'the agent running, trying its broker');
    } finally {
      await stopped(agent);
    }
  } finally {
    pki.remove();
  }
});

test.run();
