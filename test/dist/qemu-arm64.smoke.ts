import { qemuSuite } from './qemu';

qemuSuite({ name: 'linux-arm64', wordSize: 64, machine: 183, described: 'a 64-bit ELF for AArch64', blobWriter: 'node itself' }).run();
