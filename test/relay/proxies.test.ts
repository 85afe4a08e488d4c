import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient } from '../../src/api/client';
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
    const done = new Promise<void>((resolve) => socket.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= text.length) resolve();
    }));
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
    tunnel.relay.closeTunnel(tunnel.tunnel.tunnelId);
    const [src, dst] = await within(Promise.all([tunnel.source.done, tunnel.destination.done]), 10_000, 'both proxies done');
    assert.is(src.exitCode, 0);
    assert.is(dst.exitCode, 0);
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

proxies.run();
