import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient } from '../../src/api/client';
import { exitCodeOf } from '../../src/exit';
import type { Relay } from '../../src/relay/server';
import { connectTo, echoServer } from '../helpers/apps';
import { spawnProxy } from '../helpers/child';
import { startTunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';
import { startRelayCli } from './cli-run';

const proxies = suite('our source and destination proxies through the relay (TLS)');

async function echoRoundTrip(port: number, text: string): Promise<string> {
  const socket = await connectTo(port);
  try {
    let got = '';
    const done = new Promise<void>((resolve, reject) => {
      socket.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.length >= text.length) resolve();
      });
      socket.on('close', () => reject(new Error(`connection closed after ${got.length} of ${text.length} bytes`)));
    });
    socket.write(text);
    await within(done, 10_000, 'echo through the tunnel');
    return got;
  } finally {
    socket.destroy();
  }
}

proxies('in-process proxies tunnel through the relay; CloseTunnel ends both with exit 0', async () => {
  const app = await echoServer();
  const tunnel = await startTunnel({ destinationMap: { SSH: app.port } });
  try {
    assert.is(await echoRoundTrip(tunnel.port('SSH'), 'hello through the relay'), 'hello through the relay');
    await tunnel.relay.closeTunnel(tunnel.tunnel.tunnelId);
    const [src, dst] = await within(Promise.all([tunnel.source.done, tunnel.destination.done]), 10_000, 'both proxies done');
    assert.is(exitCodeOf(src), 0);
    assert.is(exitCodeOf(dst), 0);
  } finally {
    await tunnel.close();
    await app.close();
  }
});

proxies('relay CLI with --tls-self-signed DIR, tunnel opened over the API, proxy processes trusting only -c DIR', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-e2e-'));
  const certs = join(dir, 'certs');
  const credentials = { accessKeyId: 'AKIDE2E', secretAccessKey: 'e2e-secret' };
  const relay = await startRelayCli(['--listen', '127.0.0.1:0', '--tls-self-signed', certs], { LOCALPROXY_RELAY_ACCESS_KEY_ID: credentials.accessKeyId, LOCALPROXY_RELAY_SECRET_ACCESS_KEY: credentials.secretAccessKey });
  const app = await echoServer();
  const children: Array<Awaited<ReturnType<typeof spawnProxy>>> = [];
  try {
    const port = Number(new URL(relay.url).port);
    const api = new TunnelApiClient({ endpoint: `https://127.0.0.1:${port}`, region: 'us-east-1', credentials, ca: readFileSync(join(certs, 'cert.pem'), 'utf8') });
    const t = await api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['WEB'] } });
    const ca = { dir: certs, file: join(certs, 'cert.pem') };
    const fakeRelay = { port } as Relay;
    const dst = await spawnProxy({ relay: fakeRelay, ca, mode: 'destination', accessToken: t.destinationAccessToken, services: { WEB: app.port } });
    children.push(dst);
    const src = await spawnProxy({ relay: fakeRelay, ca, mode: 'source', accessToken: t.sourceAccessToken, services: { WEB: 0 } });
    children.push(src);
    await Promise.all([dst.ready, src.ready]);
    assert.is(await echoRoundTrip(src.ports.WEB, 'x'.repeat(100_000)), 'x'.repeat(100_000));
    const described = await api.call<{ tunnel: { sourceConnectionState: { status: string }; destinationConnectionState: { status: string } } }>('DescribeTunnel', { tunnelId: (await api.call<{ tunnelSummaries: Array<{ tunnelId: string }> }>('ListTunnels', {})).tunnelSummaries[0].tunnelId });
    assert.is(described.tunnel.sourceConnectionState.status, 'CONNECTED');
    assert.is(described.tunnel.destinationConnectionState.status, 'CONNECTED');
    for (const child of children) assert.not.ok(child.output().includes(t.sourceAccessToken) || child.output().includes(t.destinationAccessToken));
    assert.not.ok(relay.stderr().includes(t.sourceAccessToken));
  } finally {
    for (const child of children) await child.stop();
    await app.close();
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

proxies('proxies reconnect to a relay restarted with --state and the tunnel carries data again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-restart-'));
  const certs = join(dir, 'certs');
  const env = { LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDRESTART', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'restart-secret' };
  const stateArgs = ['--tls-self-signed', certs, '--state', join(dir, 'state.json')];
  let relay = await startRelayCli(['--listen', '127.0.0.1:0', ...stateArgs], env);
  const port = Number(new URL(relay.url).port);
  const app = await echoServer();
  const children: Array<Awaited<ReturnType<typeof spawnProxy>>> = [];
  try {
    const api = new TunnelApiClient({ endpoint: `https://127.0.0.1:${port}`, region: 'us-east-1', credentials: { accessKeyId: env.LOCALPROXY_RELAY_ACCESS_KEY_ID, secretAccessKey: env.LOCALPROXY_RELAY_SECRET_ACCESS_KEY }, ca: readFileSync(join(certs, 'cert.pem'), 'utf8') });
    const t = await api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['SSH'] } });
    const ca = { dir: certs, file: join(certs, 'cert.pem') };
    const fakeRelay = { port } as Relay;
    const dst = await spawnProxy({ relay: fakeRelay, ca, mode: 'destination', accessToken: t.destinationAccessToken, services: { SSH: app.port } });
    const src = await spawnProxy({ relay: fakeRelay, ca, mode: 'source', accessToken: t.sourceAccessToken, services: { SSH: 0 } });
    children.push(dst, src);
    await Promise.all([dst.ready, src.ready]);
    assert.is(await echoRoundTrip(src.ports.SSH, 'before'), 'before');
    const connectedBefore = (src.output().match(/Successfully established websocket connection/g) ?? []).length;

    assert.is(await relay.stop(), 0);
    relay = await startRelayCli(['--listen', `127.0.0.1:${port}`, ...stateArgs], env);
    // Both proxies reconnect with their (derived) client tokens: the access tokens stay valid.
    const reconnected = (p: typeof src) => new Promise<void>((resolve) => {
      const check = () => {
        if ((p.output().match(/Successfully established websocket connection/g) ?? []).length > connectedBefore) resolve();
      };
      p.process.stdout!.on('data', check);
      p.process.stderr!.on('data', check);
      check();
    });
    await within(Promise.all([reconnected(src), reconnected(dst)]), 30_000, 'both proxies reconnected');
    let echoed = '';
    // The source may accept before the destination's SERVICE_IDS round trip completes; retry a few times.
    for (let attempt = 0; attempt < 20 && echoed !== 'after'; attempt++) {
      echoed = await echoRoundTrip(src.ports.SSH, 'after').catch(() => '');
    }
    assert.is(echoed, 'after');
  } finally {
    for (const child of children) await child.stop();
    await app.close();
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

proxies.run();
