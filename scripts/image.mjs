// `npm run image`: a multi-arch OCI image archive (an OCI image layout in a tar file) holding the
// Linux executables of dist/bin/ for linux/amd64, linux/arm64 and linux/arm/v7, written without
// a container engine. Each image is one layer: the executable, the runtime libraries it names
// (followed through DT_NEEDED, scripts/elf.mjs) taken from Debian's packages (the host's libc6,
// libstdc++6 and libgcc-s1 for amd64; the *-arm64-cross and *-armhf-cross packages for arm),
// their copyright files, Debian's Mozilla CA bundle, and a non-root user (65532, as distroless).
//
// Reproducible: every tar entry has a fixed owner, mode and time (SOURCE_DATE_EPOCH, else the
// last commit's time), entries are sorted, gzip runs in-process with no name or time in its
// header, and the JSON is written in a fixed order; the same inputs give the same digests.
//
//   node scripts/image.mjs [--out FILE] [--bin DIR] [--no-build]
// Without --no-build, the executables of dist/bin are (re)built first unless they embed the
// current bundle (dist/sea keeps the copy they embed).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { readElf } from './elf.mjs';
import { tar } from './tar.mjs';

const root = new URL('..', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

export const NONROOT = 65532;
export const EXECUTABLE = '/usr/local/bin/localproxy';
/** Where the relay's certificates, its --state file or the agent's state go (a volume). */
export const STATE_DIR = '/var/lib/localproxy';
/** The relay's default port in the images' examples, and what the health check asks. */
export const RELAY_PORT = 8443;

/** The three Linux targets, each with where Debian keeps its libraries. */
export const PLATFORMS = [
  { target: 'linux-x64', architecture: 'amd64', machine: 62, triplet: 'x86_64-linux-gnu', libDirs: ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu'] },
  { target: 'linux-arm64', architecture: 'arm64', machine: 183, triplet: 'aarch64-linux-gnu', libDirs: ['/usr/aarch64-linux-gnu/lib'] },
  { target: 'linux-armv7', architecture: 'arm', variant: 'v7', machine: 40, triplet: 'arm-linux-gnueabihf', libDirs: ['/usr/arm-linux-gnueabihf/lib'] },
];

const CROSS_PACKAGES = 'libc6-arm64-cross libstdc++6-arm64-cross libc6-armhf-cross libstdc++6-armhf-cross libatomic1-armhf-cross';

export class ImageError extends Error {
  code = 'ERR_IMAGE';
}

const MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
};

const sha256 = (bytes) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** SOURCE_DATE_EPOCH, else the time of the last commit, else 0: never the build's own clock. */
export function sourceDateEpoch(env = process.env) {
  if (env.SOURCE_DATE_EPOCH !== undefined) {
    if (!/^\d{1,12}$/.test(env.SOURCE_DATE_EPOCH)) throw new ImageError(`SOURCE_DATE_EPOCH must be seconds since 1970: ${env.SOURCE_DATE_EPOCH}`);
    return Number(env.SOURCE_DATE_EPOCH);
  }
  try {
    return Number(execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()) || 0;
  } catch {
    return 0;
  }
}

/**
 * The Debian package that installed `path` (dpkg-query -S), without its architecture suffix.
 * Tried as given and resolved: on a merged-/usr system dpkg knows /lib/... but not /usr/lib/...
 */
function owningPackage(...paths) {
  for (const path of paths) {
    try {
      const line = execFileSync('dpkg-query', ['-S', path], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
      return line.slice(0, line.indexOf(':')).trim();
    } catch { /* try the other spelling */ }
  }
  throw new ImageError(`${paths[0]} belongs to no Debian package: the images take their libraries from Debian's packages`);
}

function findLibrary(platform, name) {
  for (const dir of platform.libDirs) {
    const path = join(dir, name);
    if (existsSync(path)) return path;
  }
  const hint = platform.architecture === 'amd64' ? 'libc6, libstdc++6 and libgcc-s1' : CROSS_PACKAGES;
  throw new ImageError(`${platform.target}: ${name} not found in ${platform.libDirs.join(', ')} (install ${hint})`);
}

/** Every library the executable loads, by soname, with the file behind it, and the interpreter. */
function runtimeLibraries(platform, executable) {
  const elf = readElf(executable);
  if (elf.machine !== platform.machine) throw new ImageError(`${executable} is not a ${platform.target} executable (ELF machine ${elf.machine})`);
  if (!elf.interpreter) throw new ImageError(`${executable} has no program interpreter: a static executable needs no image libraries`);
  const libraries = new Map();
  const pending = [...elf.needed, basename(elf.interpreter)];
  while (pending.length > 0) {
    const name = pending.shift();
    if (libraries.has(name)) continue;
    const file = findLibrary(platform, name);
    libraries.set(name, file);
    pending.push(...readElf(file).needed);
  }
  return { interpreter: elf.interpreter, libraries };
}

/** Debian's Mozilla CA certificates as one PEM bundle, in file-name order (what update-ca-certificates writes, without local additions). */
function caBundle() {
  const dir = '/usr/share/ca-certificates/mozilla';
  if (!existsSync(dir)) throw new ImageError(`${dir} is missing: install Debian's ca-certificates`);
  const names = readdirSync(dir).filter((n) => n.endsWith('.crt')).sort();
  return Buffer.concat(names.map((n) => {
    const text = readFileSync(join(dir, n), 'utf8');
    return Buffer.from(text.endsWith('\n') ? text : `${text}\n`);
  }));
}

const FILES = {
  passwd: `root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:${NONROOT}:${NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n`,
  group: `root:x:0:\nnonroot:x:${NONROOT}:\n`,
  nsswitch: 'passwd: files\ngroup: files\nhosts: files dns\n',
  // Docker and podman mount their own; this one serves runtimes that do not (runc, chroot).
  hosts: '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n',
};

/** The layer's entries for one platform, sorted, with fixed owners, modes and times. */
function rootfsEntries(platform, executable, mtime) {
  const { interpreter, libraries } = runtimeLibraries(platform, executable);
  const entries = new Map();
  const dir = (path, mode = 0o755, owner = 0) => entries.set(`${path}/`, { path: `${path}/`, type: 'dir', mode, uid: owner, gid: owner, mtime });
  const file = (path, data, mode = 0o644) => entries.set(path, { path, type: 'file', mode, data, mtime });
  const parents = (path) => {
    const parts = path.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) if (!entries.has(`${parts.slice(0, i).join('/')}/`)) dir(parts.slice(0, i).join('/'));
  };
  for (const path of ['etc/ssl/certs', 'lib', 'usr/local/bin', 'usr/share/doc', 'var/lib']) parents(`${path}/x`);
  dir('tmp', 0o1777);
  dir('home/nonroot', 0o755, NONROOT);
  dir(STATE_DIR.slice(1), 0o700, NONROOT);
  dir('root', 0o700);

  file('etc/passwd', Buffer.from(FILES.passwd));
  file('etc/group', Buffer.from(FILES.group));
  file('etc/nsswitch.conf', Buffer.from(FILES.nsswitch));
  file('etc/hosts', Buffer.from(FILES.hosts));
  file('etc/ssl/certs/ca-certificates.crt', caBundle());
  file(EXECUTABLE.slice(1), readFileSync(executable), 0o755);

  const libDir = `lib/${platform.triplet}`;
  dir(libDir);
  const packages = new Set([owningPackage('/usr/share/ca-certificates/mozilla')]);
  for (const [name, path] of libraries) {
    const real = realpathSync(path);
    // Under its soname, as the loader looks it up; the interpreter keeps its execute bit.
    file(`${libDir}/${name}`, readFileSync(real), name === basename(interpreter) ? 0o755 : 0o644);
    packages.add(owningPackage(path, real));
  }
  // The path the kernel asks for (e.g. /lib64/ld-linux-x86-64.so.2) points into the library directory.
  const interpPath = interpreter.slice(1);
  if (interpPath !== `${libDir}/${basename(interpreter)}`) {
    parents(interpPath);
    entries.set(interpPath, { path: interpPath, type: 'symlink', mode: 0o777, target: `/${libDir}/${basename(interpreter)}`, mtime });
  }
  for (const name of [...packages].sort()) {
    const copyright = `/usr/share/doc/${name}/copyright`;
    if (!existsSync(copyright)) throw new ImageError(`${copyright} is missing`);
    parents(`${copyright.slice(1)}`);
    file(copyright.slice(1), readFileSync(copyright));
  }
  const sorted = [...entries.values()].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  return { entries: sorted, packages: [...packages].sort() };
}

/** The image configuration: how docker, podman or runc start the container. */
function imageConfig(platform, diffId, created, packages) {
  const platformFields = { architecture: platform.architecture, os: 'linux', ...(platform.variant ? { variant: platform.variant } : {}) };
  return {
    created,
    ...platformFields,
    config: {
      User: `${NONROOT}:${NONROOT}`,
      ExposedPorts: { [`${RELAY_PORT}/tcp`]: {} },
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/home/nonroot', 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'],
      Entrypoint: [EXECUTABLE],
      Cmd: ['--help'],
      WorkingDir: '/home/nonroot',
      Labels: {
        'org.opencontainers.image.title': 'localproxy',
        'org.opencontainers.image.description': pkg.description,
        'org.opencontainers.image.version': pkg.version,
        'org.opencontainers.image.licenses': pkg.license,
        'org.opencontainers.image.created': created,
      },
      StopSignal: 'SIGTERM',
      // Not part of the OCI configuration: Docker reads it (the Dockerfile HEALTHCHECK); podman
      // only for images in Docker's format, so podman users give --health-cmd (README).
      Healthcheck: {
        Test: ['CMD', EXECUTABLE, 'relay', '--health-check', `https://127.0.0.1:${RELAY_PORT}`],
        Interval: 30e9,
        Timeout: 10e9,
        StartPeriod: 10e9,
        Retries: 3,
      },
    },
    rootfs: { type: 'layers', diff_ids: [diffId] },
    history: [{ created, created_by: `localproxy ${pkg.version} scripts/image.mjs (Debian packages: ${packages.join(' ')})` }],
  };
}

function json(value) {
  return Buffer.from(JSON.stringify(value));
}

/**
 * Builds the archive. Returns the digest of the multi-arch index (what a registry shows for the
 * tag) and each platform's manifest digest.
 * @param {{ out: string, binDir: string, epoch?: number, log?: (line: string) => void }} options
 */
export function buildImage({ out, binDir, epoch = sourceDateEpoch(), log = () => {} }) {
  const created = new Date(epoch * 1000).toISOString().replace(/\.000Z$/, 'Z');
  const blobs = new Map();
  const add = (bytes) => {
    const digest = sha256(bytes);
    blobs.set(digest, bytes);
    return { digest, size: bytes.length };
  };
  const manifests = [];
  for (const platform of PLATFORMS) {
    const started = Date.now();
    const executable = join(binDir, `localproxy-${platform.target}`);
    if (!existsSync(executable)) throw new ImageError(`${executable} is missing: run \`npm run dist\` first`);
    const { entries, packages } = rootfsEntries(platform, executable, epoch);
    const layerTar = tar(entries);
    const layer = add(gzipSync(layerTar));
    const config = add(json(imageConfig(platform, sha256(layerTar), created, packages)));
    const manifest = add(json({
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config: { mediaType: MEDIA.config, ...config },
      layers: [{ mediaType: MEDIA.layer, ...layer }],
    }));
    const platformField = { architecture: platform.architecture, os: 'linux', ...(platform.variant ? { variant: platform.variant } : {}) };
    manifests.push({ mediaType: MEDIA.manifest, ...manifest, platform: platformField });
    log(`image: linux/${platform.architecture}${platform.variant ? `/${platform.variant}` : ''} ${manifest.digest} (layer ${(layer.size / 1048576).toFixed(1)} MiB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  const index = add(json({ schemaVersion: 2, mediaType: MEDIA.index, manifests }));
  // The layout's own index names the multi-arch index with the tag, as registries and
  // `skopeo copy oci-archive:FILE:TAG` expect.
  const layoutIndex = json({
    schemaVersion: 2,
    mediaType: MEDIA.index,
    manifests: [{ mediaType: MEDIA.index, ...index, annotations: { 'org.opencontainers.image.ref.name': pkg.version } }],
  });
  const archiveEntries = [
    { path: 'blobs/', type: 'dir', mode: 0o755, mtime: epoch },
    { path: 'blobs/sha256/', type: 'dir', mode: 0o755, mtime: epoch },
    ...[...blobs.keys()].sort().map((digest) => ({ path: `blobs/sha256/${digest.slice(7)}`, type: 'file', mode: 0o644, data: blobs.get(digest), mtime: epoch })),
    { path: 'index.json', type: 'file', mode: 0o644, data: layoutIndex, mtime: epoch },
    { path: 'oci-layout', type: 'file', mode: 0o644, data: json({ imageLayoutVersion: '1.0.0' }), mtime: epoch },
  ];
  mkdirSync(dirname(out), { recursive: true });
  const partial = `${out}.partial-${process.pid}`;
  writeFileSync(partial, tar(archiveEntries));
  renameSync(partial, out);
  return { out, tag: pkg.version, indexDigest: index.digest, manifests: manifests.map((m) => ({ platform: m.platform, digest: m.digest })) };
}

/** dist/bin holds the three executables, built from the current bundle (dist/sea keeps the copy they embed). */
function executablesCurrent(binDir) {
  const embedded = join(root, 'dist', 'sea', 'localproxy.cjs');
  const current = join(root, 'dist', 'localproxy.cjs');
  if (!PLATFORMS.every((p) => existsSync(join(binDir, `localproxy-${p.target}`)))) return false;
  return existsSync(embedded) && existsSync(current) && readFileSync(embedded).equals(readFileSync(current));
}

async function main(args) {
  let out = join(root, 'dist', 'image', `localproxy-${pkg.version}-oci.tar`);
  const defaultBin = join(root, 'dist', 'bin');
  let binDir = defaultBin;
  let build = true;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--out') out = resolve(args[++i] ?? '');
    else if (args[i] === '--bin') binDir = resolve(args[++i] ?? '');
    else if (args[i] === '--no-build') build = false;
    else throw new ImageError(`unknown argument '${args[i]}' (expected --out FILE, --bin DIR or --no-build)`);
  }
  // The executables npm run dist (or test:dist) left are reused while they embed the current bundle.
  if (build && binDir === defaultBin && !executablesCurrent(binDir)) {
    const { dist } = await import('./dist.mjs');
    await dist(['--target', PLATFORMS.map((p) => p.target).join(',')]);
    if (process.exitCode) return;
  }
  const result = buildImage({ out, binDir, log: (line) => process.stderr.write(`${line}\n`) });
  process.stdout.write(`${result.out}\n  tag ${result.tag}, index ${result.indexDigest}\n`);
  for (const m of result.manifests) process.stdout.write(`  ${m.platform.os}/${m.platform.architecture}${m.platform.variant ? `/${m.platform.variant}` : ''} ${m.digest}\n`);
}

if (process.argv[1] && existsSync(process.argv[1]) && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  try {
    await main(process.argv.slice(2));
  } catch (err) {
    if (typeof err?.code !== 'string' || !err.code.startsWith('ERR_')) throw err;
    process.stderr.write(`image: ${err.message}\n`);
    process.exitCode = 1;
  }
}
