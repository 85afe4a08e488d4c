import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

const root = new URL('../..', import.meta.url).pathname;
const demo = suite('e2e: npm run demo');

demo('`scripts/demo.mjs --once` brings up a real tunnel, fetches through it and exits 0', async () => {
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, [join(root, 'scripts/demo.mjs'), '--once'], { cwd: root, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
  assert.is(code, 0, `demo exited ${code}:\n${stdout}\n${stderr}`);
  assert.match(stdout, 'self-check: fetched "hello through the tunnel" through the tunnel');
  const port = /curl http:\/\/127\.0\.0\.1:(\d+)\//.exec(stdout)?.[1];
  assert.ok(port && Number(port) > 0, `prints what to connect to:\n${stdout}`);
});

demo.run();
