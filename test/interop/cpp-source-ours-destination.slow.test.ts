import { pairSuite } from './pair';

pairSuite('interop: C++ source ↔ our destination (no -y), through our relay over TLS', 'cpp', 'ours');
