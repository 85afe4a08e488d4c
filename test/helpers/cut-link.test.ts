// The cuttable link the resume tests rely on: it forwards, a cut resets both sides, and a black
// hole loses nothing and tells nobody until it ends.
import { once } from 'node:events';
import net, { type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cutLink, type CutLink } from './cut-link';
import { within } from './wait';

interface Ctx { server: net.Server; accepted: Socket[]; link: CutLink }
const test = suite<Ctx>('test helper: cutLink');

test.before.each(async (ctx) => {
  ctx.accepted = [];
  ctx.server = net.createServer((s) => {
    ctx.accepted.push(s);
    s.on('error', () => {});
  });
  ctx.server.listen(0, '127.0.0.1');
  await once(ctx.server, 'listening');
  ctx.link = await cutLink((ctx.server.address() as net.AddressInfo).port);
});
test.after.each(async (ctx) => {
  await ctx.link.close();
  for (const s of ctx.accepted) s.destroy();
  await new Promise((resolve) => ctx.server.close(resolve));
});

async function connect(ctx: Ctx): Promise<{ client: Socket; far: Socket }> {
  const before = ctx.accepted.length;
  const client = net.connect(ctx.link.port, '127.0.0.1');
  client.on('error', () => {});
  await within(once(client, 'connect'), 5000, 'connect through the link');
  while (ctx.accepted.length === before) await within(once(ctx.server, 'connection'), 5000, 'the far side accepts');
  return { client, far: ctx.accepted[ctx.accepted.length - 1] };
}

/** Resolves when the socket closes, whether or not it was reset (events.once rejects on 'error'). */
function closed(socket: Socket): Promise<void> {
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

function read(socket: Socket, bytes: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  return within(new Promise<Buffer>((resolve) => {
    const onData = (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= bytes) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
  }), 5000, what);
}

test('forwards both ways, and a cut resets both sides', async (ctx) => {
  const { client, far } = await connect(ctx);
  client.write('ping');
  assert.is((await read(far, 4, 'upstream gets ping')).toString(), 'ping');
  far.write('pong');
  assert.is((await read(client, 4, 'client gets pong')).toString(), 'pong');
  const bothClosed = Promise.all([closed(client), closed(far)]);
  ctx.link.cut();
  await within(bothClosed, 5000, 'both sides closed by the cut');
  assert.is(ctx.link.connections, 1);
});

test('a black hole passes nothing and no close; restore delivers what waited, in order', async (ctx) => {
  const { client, far } = await connect(ctx);
  ctx.link.blackHole();
  let crossed = 0;
  far.on('data', (d: Buffer) => { crossed += d.length; });
  const payload = Buffer.alloc(256 * 1024, 7);
  client.write(payload);
  // A round trip through the link's own event loop shows that nothing crossed meanwhile.
  const probe = net.connect(ctx.link.port, '127.0.0.1');
  probe.on('error', () => {});
  await within(once(probe, 'connect'), 5000, 'a connection during the hole is accepted');
  assert.is(crossed, 0, 'nothing crossed during the black hole');
  const probeClosed = closed(probe);
  ctx.link.restore();
  await within(probeClosed, 5000, 'the connection made during the hole is reset on restore');
  while (crossed < payload.length) await within(once(far, 'data'), 5000, `the bytes that waited (${crossed})`);
  assert.is(crossed, payload.length);
  client.destroy();
});

test('a side that gives up during a black hole is not heard of until the hole ends', async (ctx) => {
  const { client, far } = await connect(ctx);
  ctx.link.blackHole();
  let farClosed = false;
  far.on('close', () => { farClosed = true; });
  client.destroy();
  await within(closed(client), 5000, 'client closed');
  const probe = net.connect(ctx.link.port, '127.0.0.1');
  probe.on('error', () => {});
  await within(once(probe, 'connect'), 5000, 'the link is still serving');
  assert.not.ok(farClosed, 'the far side did not hear of the close during the hole');
  ctx.link.restore();
  await within(closed(far), 5000, 'the far side is reset once the hole ends');
});

test.run();
