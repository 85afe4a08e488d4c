/**
 * `npm run image`: the OCI image archive of the three Linux executables, taken apart the way a
 * registry or a runtime does it, with Debian's skopeo (load, select a platform) and umoci (unpack
 * into a runtime bundle). Each image is then run by chroot as its configuration says (user,
 * environment, entrypoint), qemu-user for the arm ones: it is copied into the root file system,
 * because binfmt_misc is not mounted here, and `podman run` cannot set its rlimits on these
 * machines. The relay image serves a tunnel between two proxies and passes its own health check,
 * and a second build gives the same digests.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freePort, within } from '../helpers/wait';
import { bundle, echoRoundTrip, echoServer, Program, root, runBundle } from './harness';

const test = suite('dist: the OCI image (npm run image), loaded with skopeo and umoci, run by chroot');
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version as string;
const MS = 120_000;
const work = mkdtempSync(join(tmpdir(), 'localproxy-image-'));
const archive = join(work, 'first.tar');
let indexDigest = '';

interface Arch {
  /** As in the image index. */
  platform: { architecture: string; variant?: string };
  /** skopeo's --override-* flags selecting it. */
  select: string[];
  /** qemu-user for a foreign architecture, copied into the root file system. */
  qemu?: string;
  libraries: string[];
}

const ARCHES: Arch[] = [
  { platform: { architecture: 'amd64' }, select: ['--override-arch', 'amd64'], libraries: ['x86_64-linux-gnu/libc.so.6', 'x86_64-linux-gnu/libstdc++.so.6', 'x86_64-linux-gnu/libgcc_s.so.1'] },
  { platform: { architecture: 'arm64' }, select: ['--override-arch', 'arm64'], qemu: '/usr/bin/qemu-aarch64-static', libraries: ['aarch64-linux-gnu/libc.so.6', 'aarch64-linux-gnu/libstdc++.so.6'] },
  { platform: { architecture: 'arm', variant: 'v7' }, select: ['--override-arch', 'arm', '--override-variant', 'v7'], qemu: '/usr/bin/qemu-arm-static', libraries: ['arm-linux-gnueabihf/libatomic.so.1', 'arm-linux-gnueabihf/libstdc++.so.6'] },
];

function build(out: string): { indexDigest: string; stdout: string } {
  const result = spawnSync(process.execPath, ['scripts/image.mjs', '--no-build', '--out', out], { cwd: root, encoding: 'utf8', timeout: 600_000 });
  assert.is(result.status, 0, `npm run image: ${result.stderr}`);
  const digest = /index (sha256:[0-9a-f]{64})/.exec(result.stdout);
  assert.ok(digest, result.stdout);
  return { indexDigest: digest![1]!, stdout: result.stdout };
}

function tool(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: MS });
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

interface Unpacked {
  rootfs: string;
  /** The OCI runtime configuration umoci wrote from the image configuration. */
  process: { user: { uid: number; gid: number }; args: string[]; env: string[]; cwd: string };
  /** What runs the image's executable (qemu in the root file system for the arm ones). */
  launcher: string[];
}

const unpacked = new Map<string, Unpacked>();

/** skopeo copy of one platform into an OCI layout, umoci unpack into a bundle. */
function archName(arch: Arch): string {
  return `${arch.platform.architecture}${arch.platform.variant ?? ''}`;
}

function unpack(arch: Arch): Unpacked {
  const name = archName(arch);
  const known = unpacked.get(name);
  if (known) return known;
  const layout = join(work, 'layout');
  tool('skopeo', ['copy', ...arch.select, `oci-archive:${archive}:${version}`, `oci:${layout}:${name}`]);
  const bundleDir = join(work, `bundle-${name}`);
  tool('umoci', ['unpack', '--image', `${layout}:${name}`, bundleDir]);
  const rootfs = join(bundleDir, 'rootfs');
  const launcher: string[] = [];
  if (arch.qemu) {
    copyFileSync(arch.qemu, join(rootfs, 'qemu'));
    launcher.push('/qemu');
  }
  const config = JSON.parse(readFileSync(join(bundleDir, 'config.json'), 'utf8')) as { process: Unpacked['process'] };
  const result = { rootfs, process: config.process, launcher };
  unpacked.set(name, result);
  return result;
}

/** Runs `args` in the image as its configuration says: its user, its environment only. */
function inImage(image: Unpacked, args: string[], extraEnv: Record<string, string> = {}): Program {
  const env: NodeJS.ProcessEnv = Object.fromEntries(image.process.env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
  const [program, ...rest] = args;
  return new Program('/usr/sbin/chroot', [`--userspec=${image.process.user.uid}:${image.process.user.gid}`, image.rootfs, ...image.launcher, program!, ...rest], { ...env, ...extraEnv }, false);
}

async function finish(program: Program, what: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  try {
    const { code } = await within(program.exited, MS, what);
    return { code, stdout: program.stdout, stderr: program.stderr };
  } finally {
    await program.stop('SIGKILL');
  }
}

test.before(() => {
  indexDigest = build(archive).indexDigest;
});

test.after(() => {
  rmSync(work, { recursive: true, force: true });
});

test('one OCI layout: the tag names a multi-arch index of linux/amd64, linux/arm64 and linux/arm/v7', () => {
  const raw = tool('skopeo', ['inspect', '--raw', `oci-archive:${archive}:${version}`]);
  assert.is(`sha256:${sha256(Buffer.from(raw))}`, indexDigest, 'the digest printed is the index\'s');
  const index = JSON.parse(raw) as { mediaType: string; manifests: Array<{ mediaType: string; platform: { os: string; architecture: string; variant?: string } }> };
  assert.is(index.mediaType, 'application/vnd.oci.image.index.v1+json');
  assert.equal(index.manifests.map((m) => m.platform), ARCHES.map((a) => ({ ...a.platform, os: 'linux' })).map(({ architecture, os, variant }) => ({ architecture, os, ...(variant ? { variant } : {}) })));
  for (const m of index.manifests) assert.is(m.mediaType, 'application/vnd.oci.image.manifest.v1+json');
});

interface ImageConfig {
  architecture: string;
  variant?: string;
  config: { User: string; Entrypoint: string[]; Cmd: string[]; Healthcheck: { Test: string[] }; Env: string[] };
}

/**
 * An image's configuration as stored, read from the layout skopeo copied (skopeo inspect
 * --config drops what the OCI configuration does not define, such as Docker's Healthcheck).
 */
function storedConfig(arch: Arch): ImageConfig {
  unpack(arch);
  const layout = join(work, 'layout');
  const blob = (digest: string) => readFileSync(join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length)), 'utf8');
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === archName(arch));
  assert.ok(entry, `${archName(arch)} in the layout`);
  const manifest = JSON.parse(blob(entry!.digest)) as { config: { digest: string } };
  return JSON.parse(blob(manifest.config.digest)) as ImageConfig;
}

test('each image runs localproxy as the non-root user 65532 and checks its health with the relay\'s /health', () => {
  for (const arch of ARCHES) {
    const config = storedConfig(arch);
    assert.is(config.architecture, arch.platform.architecture);
    assert.is(config.variant, arch.platform.variant);
    assert.is(config.config.User, '65532:65532');
    assert.equal(config.config.Entrypoint, ['/usr/local/bin/localproxy']);
    assert.equal(config.config.Healthcheck.Test, ['CMD', '/usr/local/bin/localproxy', 'relay', '--health-check', 'https://127.0.0.1:8443']);
    assert.ok(config.config.Env.includes('SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'));
  }
});

test('converted for `docker load` (skopeo copy to docker-archive), the configuration keeps the entrypoint and the health check', () => {
  const dockerArchive = join(work, 'docker.tar');
  tool('skopeo', ['copy', ...ARCHES[0]!.select, `oci-archive:${archive}:${version}`, `docker-archive:${dockerArchive}:localproxy:${version}`]);
  const list = JSON.parse(tool('tar', ['-xOf', dockerArchive, 'manifest.json'])) as Array<{ Config: string; RepoTags: string[] }>;
  assert.equal(list[0]!.RepoTags, [`docker.io/library/localproxy:${version}`]);
  const config = JSON.parse(tool('tar', ['-xOf', dockerArchive, list[0]!.Config])) as ImageConfig;
  assert.equal(config.config.Entrypoint, ['/usr/local/bin/localproxy']);
  assert.equal(config.config.Healthcheck.Test, ['CMD', '/usr/local/bin/localproxy', 'relay', '--health-check', 'https://127.0.0.1:8443']);
  rmSync(dockerArchive);
});

for (const arch of ARCHES) {
  const label = `linux/${arch.platform.architecture}${arch.platform.variant ? `/${arch.platform.variant}` : ''}`;
  test(`${label}: unpacked by umoci, its executable, libraries, CA bundle and user are there, and it runs: --version and the default command`, async () => {
    const image = unpack(arch);
    assert.equal(image.process.user, { uid: 65532, gid: 65532 });
    for (const lib of arch.libraries) assert.ok(existsSync(join(image.rootfs, 'lib', lib)), `lib/${lib}`);
    assert.match(readFileSync(join(image.rootfs, 'etc/passwd'), 'utf8'), 'nonroot:x:65532:65532:');
    assert.match(readFileSync(join(image.rootfs, 'etc/ssl/certs/ca-certificates.crt'), 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    assert.is(statSync(join(image.rootfs, 'var/lib/localproxy')).uid, 65532, 'the state directory belongs to the user');
    const versionRun = await finish(inImage(image, ['/usr/local/bin/localproxy', '--version']), `${label} --version`);
    assert.is(versionRun.code, 0, versionRun.stderr);
    assert.is(versionRun.stdout, `localproxy ${version}\n`);
    // Entrypoint and Cmd as the runtime gets them: `docker run IMAGE` prints the help.
    const defaultRun = await finish(inImage(image, image.process.args), `${label} ${image.process.args.join(' ')}`);
    assert.is(defaultRun.code, 0, defaultRun.stderr);
    assert.is(defaultRun.stdout, (await runBundle(['--help'])).stdout);
  });
}

test('the amd64 relay image serves a tunnel between two proxies and passes its own health check', async () => {
  const image = unpack(ARCHES[0]!);
  const keys = { LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDIMAGE', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'image-test-secret-key' };
  const port = await freePort();
  const relay = inImage(image, ['/usr/local/bin/localproxy', 'relay', '--listen', `127.0.0.1:${port}`, '--tls-self-signed', '/var/lib/localproxy/certs', '--tls-name', 'relay.test'], keys);
  const programs: Program[] = [relay];
  const echo = await echoServer();
  try {
    await relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:\d+/, MS, 'relay in the image listening');
    const certs = join(image.rootfs, 'var/lib/localproxy/certs');
    assert.is(statSync(join(certs, 'key.pem')).uid, 65532, 'written by the image\'s user into its state directory');
    const opened = await runBundle(['tunnel', 'open', '--endpoint', `https://127.0.0.1:${port}`, '--region', 'us-east-1', '--services', 'SSH1', '--ca', join(certs, 'cert.pem')],
      { AWS_ACCESS_KEY_ID: keys.LOCALPROXY_RELAY_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: keys.LOCALPROXY_RELAY_SECRET_ACCESS_KEY });
    assert.is(opened.code, 0, opened.stderr);
    const tokens = JSON.parse(opened.stdout) as { sourceAccessToken: string; destinationAccessToken: string };
    const proxy = (args: string[], token: string): Program => {
      const program = new Program(process.execPath, [bundle, '-e', `127.0.0.1:${port}`, '-c', certs, ...args], { ...process.env, AWSIOT_TUNNEL_ACCESS_TOKEN: token }, false);
      programs.push(program);
      return program;
    };
    const destination = proxy(['-d', `SSH1=${echo.port}`], tokens.destinationAccessToken);
    await destination.waitFor(/Successfully established websocket connection/, MS, 'destination connected');
    const sourcePort = await freePort();
    const source = proxy(['-s', `SSH1=${sourcePort}`], tokens.sourceAccessToken);
    await source.waitFor(/Listening for new connection on port \d+/, MS, 'source listening');
    const result = await echoRoundTrip(sourcePort, 256 << 10, MS);
    assert.is(result.length, 256 << 10);
    assert.is(result.received, result.sent);

    // The image's health check, run in the image as a runtime would (on the test's port).
    const [kind, ...check] = storedConfig(ARCHES[0]!).config.Healthcheck.Test;
    assert.is(kind, 'CMD');
    const health = await finish(inImage(image, check.map((arg) => arg.replace(':8443', `:${port}`))), 'health check');
    assert.is(health.code, 0, health.stderr);
    assert.match(health.stdout, 'HTTP 200 ok');
  } finally {
    for (const program of programs.reverse()) await program.stop();
    for (const socket of echo.sockets) socket.destroy();
    echo.server.close();
  }
});

test('reproducible: a second build gives the same index digest and the same archive, byte for byte', () => {
  const second = join(work, 'second.tar');
  assert.is(build(second).indexDigest, indexDigest);
  assert.is(sha256(readFileSync(second)), sha256(readFileSync(archive)));
  rmSync(second);
});

test.run();
