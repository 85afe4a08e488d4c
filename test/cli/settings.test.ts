/**
 * `--export-default-settings` (built CLI) → `--settings-json` gives the same settings,
 * the export uses the reference's key names, and an edited file merges over the defaults.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { buildProxyOptions, type CliContext } from '../../src/cli/proxy-options';
import { defaultSettings } from '../../src/settings';
import { runCli } from './run-cli';

const dir = mkdtempSync(join(tmpdir(), 'localproxy-settings-'));
const exported = join(dir, 'lpsettings.json');

function ctx(): CliContext {
  return { env: {}, cwd: dir, executable: join(dir, 'localproxy'), stdout: () => {}, stderr: () => {}, logSink: () => {} };
}

function settingsFrom(path: string) {
  const plan = buildProxyOptions(['-t', 'token', '-r', 'us-east-1', '-s', '5555', '--settings-json', path], ctx());
  if (plan.action !== 'run') throw new Error('expected a run plan');
  return plan.options.settings;
}

const settings = suite('settings files');

settings.before(async () => {
  const r = await runCli(['--export-default-settings', exported]);
  assert.is(r.code, 0, r.stderr);
});

settings.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

settings('export then --settings-json gives the default settings', () => {
  assert.equal(settingsFrom(exported), defaultSettings());
});

settings('the export has the reference key names, every value a string', () => {
  const tree = JSON.parse(readFileSync(exported, 'utf8'));
  const proxy = tree.tunneling.proxy;
  assert.is(proxy.default_bind_address, 'localhost');
  assert.is(proxy.message.max_payload_size, '64512');
  assert.is(proxy.tcp.connection_retry_count, '5');
  assert.is(proxy.tcp.max_active_connections, '128');
  assert.is(proxy.websocket.connect_retry_count, '-1');
  assert.is(proxy.websocket.reconnect_on_data_error, 'true');
  assert.is(proxy.websocket.subprotocol, 'aws.iot.securetunneling-3.0');
  assert.is(proxy.region_endpoint_overrides['cn-north-1'], 'data.tunneling.iot.cn-north-1.amazonaws.com.cn');
  assert.ok(readFileSync(exported, 'utf8').startsWith('{\n    "tunneling": {\n        "proxy": {'), '4-space indent as the reference');
});

settings('an edited export merges over the defaults', () => {
  const tree = JSON.parse(readFileSync(exported, 'utf8'));
  tree.tunneling.proxy.websocket.ping_period_ms = '5000';
  delete tree.tunneling.proxy.region_endpoint_overrides;
  const edited = join(dir, 'edited.json');
  writeFileSync(edited, JSON.stringify(tree));
  const s = settingsFrom(edited);
  assert.is(s.pingPeriodMs, 5000);
  assert.equal(s.regionEndpointOverrides, defaultSettings().regionEndpointOverrides);
  assert.equal({ ...s, pingPeriodMs: defaultSettings().pingPeriodMs }, defaultSettings());
});

settings('a wrong type is a usage error naming the key', () => {
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ tunneling: { proxy: { websocket: { ping_period_ms: '5000ms' } } } }));
  assert.throws(() => settingsFrom(bad), (err: Error & { exitCode?: number }) => err.exitCode === 2 && err.message.includes('tunneling.proxy.websocket.ping_period_ms'));
});

settings.run();
