/**
 * The reader of the proxy's log output goes away (`localproxy ... 2>&1 | head`, a restarted
 * log collector): the tunnel keeps working and a later SIGTERM still ends it with exit 0.
 * The reference dies of SIGPIPE on its next log line; a first version exited 1.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectTo, echoServer, type AppServer } from '../helpers/apps';
import { caDir } from '../helpers/child';
import { startRelayForTests, type Relay } from '../helpers/tunnel';
import { within } from '../helpers/wait';
import { startCli, type LiveCli } from './live-cli';

let relay: Relay;
let app: AppServer;
let ca: ReturnType<typeof caDir>;
let work: string;
const running = new Set<LiveCli>();

const stdio = suite('log output closed by its reader');

stdio.before(async () => {
  relay = await startRelayForTests();
  app = await echoServer();
  ca = caDir(relay);
  work = mkdtempSync(join(tmpdir(), 'localproxy-stdio-'));
});

stdio.after(async () => {
  for (const cli of running) cli.kill();
  await app.close();
  await relay.close();
  ca.remove();
  rmSync(work, { recursive: true, force: true });
});

stdio('a closed stderr pipe does not end the tunnel; SIGTERM still exits 0', async () => {
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const common = ['-e', `127.0.0.1:${relay.port}`, '-c', ca.dir, '-v', '6'];
  const destination = startCli([...common, '-d', `SSH1=127.0.0.1:${app.port}`], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.destinationAccessToken }, cwd: work });
  const source = startCli([...common, '-m', 'src'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.sourceAccessToken }, cwd: work });
  running.add(destination);
  running.add(source);
  await destination.waitFor(/Successfully established websocket connection/);
  const port = Number((await source.waitFor(/Listening for new connection on port (\d+)/))[1]);
  // Both proxies lose their log reader; every line they log from now on meets EPIPE.
  for (const cli of [source, destination]) {
    cli.child.stderr!.destroy();
    cli.child.stdout!.destroy();
  }
  for (let round = 0; round < 3; round++) {
    const socket = await connectTo(port);
    const reply = new Promise<Buffer>((resolve, reject) => {
      socket.once('data', resolve);
      socket.once('error', reject);
      socket.once('close', () => reject(new Error(`connection closed before the echo of round ${round}`)));
    });
    socket.write(`round ${round}`);
    const echo = await within(reply, 10_000, `echo of round ${round}`);
    assert.is(echo.toString(), `round ${round}`);
    socket.destroy();
  }
  source.child.kill('SIGTERM');
  destination.child.kill('SIGTERM');
  const [s, d] = await within(Promise.all([source.exited, destination.exited]), 5000, 'both proxies exit');
  running.delete(source);
  running.delete(destination);
  assert.equal([s.code, s.signal], [0, null], 'source exit');
  assert.equal([d.code, d.signal], [0, null], 'destination exit');
});

stdio.run();
