import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startTunnel, type Tunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const REQUESTS = 20;
const curl = suite('e2e: curl through one service (V3 simultaneous connections)');

function body(n: number): string {
  return `response ${n} `.repeat(20_000);
}

curl('20 curl processes at once all get their own response; the server holds each until all 20 are open', async () => {
  // Holding every response until all requests arrived proves the 20 connections are open through
  // the tunnel at the same time: a tunnel that served them one at a time would never get there.
  const held: { n: number; res: ServerResponse }[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    held.push({ n: Number(req.url?.slice(1)), res });
    if (held.length === REQUESTS) for (const h of held) h.res.end(body(h.n));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  let tunnel: Tunnel | undefined;
  try {
    tunnel = await startTunnel({ destinationMap: { HTTP: (server.address() as { port: number }).port } });
    const port = tunnel.port('HTTP');
    const fetches = Array.from({ length: REQUESTS }, (_, n) => new Promise<string>((resolve, reject) => {
      execFile('curl', ['-sS', '--max-time', '30', `http://127.0.0.1:${port}/${n}`], { maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`curl ${n}: ${stderr || err.message}`));
        else resolve(stdout);
      });
    }));
    const bodies = await within(Promise.all(fetches), 40_000, '20 parallel curl responses');
    for (const [n, text] of bodies.entries()) assert.ok(text === body(n), `response ${n} is byte-exact (${text.length} chars)`);
    assert.is(held.length, REQUESTS);
  } finally {
    await tunnel?.close();
    server.closeAllConnections();
    server.close();
  }
});

curl.run();
