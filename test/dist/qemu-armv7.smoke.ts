import { qemuSuite } from './qemu';

qemuSuite({ name: 'linux-armv7', wordSize: 32, machine: 40, described: 'a 32-bit ELF for ARM', blobWriter: 'scripts/sea-blob.mjs' }).run();
