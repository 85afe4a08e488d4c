import { pairSuite } from './pair';

pairSuite('interop: our source (no -y) ↔ C++ destination, through our relay over TLS', 'ours', 'cpp');
