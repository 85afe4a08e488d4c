/**
 * The device agent run from an executable: mosquitto with TLS client certificates (test/agent/broker.ts),
 * relay, `tunnel open` and source from the executable, and `localproxy agent` from it starting the
 * destination for a notification published on the thing's topic; then bytes through the tunnel and
 * SIGTERM (exit 0).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectBroker } from '../../src/mqtt/link';
import { encodeNotification, notificationTopic } from '../../src/mqtt/notification';
import { Logger } from '../../src/log';
import { Broker, TestPki } from '../agent/broker';
import { freePort } from '../helpers/wait';
import { echoRoundTrip, echoServer, run, start, type Platform, type Program, type TunnelResult } from './harness';

const RELAY_KEY = { id: 'AKIDLOCALPROXYAGENT', secret: 'dist-agent-test-secret-key-0123456789' };

export async function agentTunnelThrough(platform: Platform, bytes: number, ms: number): Promise<TunnelResult & { agentExit: number | null }> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-dist-agent-'));
  const pki = await new TestPki().init();
  const broker = await Broker.start(pki);
  const device = await pki.issue('pi1');
  const publisherCert = await pki.issue('relay');
  const publisher = connectBroker({ url: broker.url, clientId: 'test-publisher', cert: publisherCert.cert, key: publisherCert.key, ca: pki.caPem, log: new Logger({ level: 0 }) });
  const programs: Program[] = [];
  const echo = await echoServer();
  try {
    const relay = start(platform, ['relay', '--listen', '127.0.0.1:0', '--tls-self-signed', platform.hostPath(dir)], {
      LOCALPROXY_RELAY_ACCESS_KEY_ID: RELAY_KEY.id,
      LOCALPROXY_RELAY_SECRET_ACCESS_KEY: RELAY_KEY.secret,
    });
    programs.push(relay);
    const [, relayPort] = await relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)/, ms, 'relay listening line');

    const agent = start(platform, ['agent', '--mqtt-url', broker.url, '--thing-name', 'pi1',
      '--mqtt-cert', platform.hostPath(device.certFile), '--mqtt-key', platform.hostPath(device.keyFile), '--mqtt-ca', platform.hostPath(pki.caFile),
      '--service', `SSH1=${echo.port}`, '-e', `127.0.0.1:${relayPort}`, '-c', platform.hostPath(dir),
      // Its own state directory, not the user's: nothing is resumed from another run.
      '--state-dir', platform.hostPath(join(dir, 'agent-state'))]);
    programs.push(agent);
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, ms, 'agent subscribed');

    const opened = await run(platform, ['tunnel', 'open', '--endpoint', `https://127.0.0.1:${relayPort}`, '--region', 'us-east-1',
      '--services', 'SSH1', '--thing-name', 'pi1', '--ca', platform.hostPath(join(dir, 'cert.pem'))], {
      AWS_ACCESS_KEY_ID: RELAY_KEY.id,
      AWS_SECRET_ACCESS_KEY: RELAY_KEY.secret,
    }, ms);
    if (opened.code !== 0) throw new Error(`tunnel open exited ${opened.code}: ${opened.stderr}${opened.stdout}`);
    const tokens = JSON.parse(opened.stdout) as { sourceAccessToken: string; destinationAccessToken: string };
    await publisher.publish(notificationTopic('pi1'), encodeNotification({ clientAccessToken: tokens.destinationAccessToken, clientMode: 'destination', region: 'local', services: ['SSH1'] }));
    await agent.waitFor(/tunnel #1: Successfully established websocket connection/, ms, 'agent tunnel connected');

    const sourcePort = await freePort();
    const source = start(platform, ['-e', `127.0.0.1:${relayPort}`, '-c', platform.hostPath(dir), '-v', '4', '-s', `SSH1=${sourcePort}`], { AWSIOT_TUNNEL_ACCESS_TOKEN: tokens.sourceAccessToken });
    programs.push(source);
    await source.waitFor(/Listening for new connection on port \d+/, ms, 'source listening');

    const result = await echoRoundTrip(sourcePort, bytes, ms);
    const { code } = await agent.stop('SIGTERM');
    if (agent.stderr.includes(tokens.destinationAccessToken)) throw new Error('the agent logged its token');
    return { ...result, agentExit: code };
  } finally {
    for (const program of programs.reverse()) await program.stop();
    for (const socket of echo.sockets) socket.destroy();
    echo.server.close();
    await publisher.close();
    await broker.stop();
    pki.remove();
    rmSync(dir, { recursive: true, force: true });
  }
}
