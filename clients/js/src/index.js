// imlog's JavaScript SDK, for browsers and Node.js (≥ 20): see README.md.

export { ImlogClient } from './client.js';
export { Connection } from './connection.js';
export { ImlogError } from './errors.js';
export { Upload, kindOf } from './uploads.js';
export { Download } from './downloads.js';
export { Relay } from './transfers.js';
export { memoryStore, localStorageStore } from './store.js';
export { Sha256, sha256Hex } from './sha256.js';
