import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { socketpairDgram, FramePort } from './packages/native-vz/src/index.ts';
const addon = createRequire(import.meta.url).resolve('./packages/native-vz/build/Release/native_vz.node');
const [g, m] = socketpairDgram();
const w = new Worker(`
const { workerData, parentPort } = require('node:worker_threads');
const native = require(workerData.addon);
const gen = new native.FramePort(workerData.g, new ArrayBuffer(64), new Uint32Array(1), new Uint32Array(1), 64, 1, false, 1);
const b = Buffer.alloc(1514);
let sent = 0;
function pump(){ for (let k=0;k<16;k++){ const n = gen.sendBatch(b, new Uint32Array([0]), new Uint32Array([1514]), 1); sent+=n; if(!n){ gen.waitWritable(pump); return;} } setImmediate(pump); }
pump();
setInterval(()=>console.log('worker sent', sent), 500).unref();
`, { eval: true, workerData: { addon, g } });
w.on('error', (e) => console.log('err', e));
w.on('exit', (c) => console.log('exit', c));
const p = new FramePort(m, { frameSize: 2048 });
let n = 0;
p.onBatch((b) => { n += b.count; });
setInterval(() => console.log('main got', n, p.stats().rxBatches), 500);
setTimeout(() => process.exit(0), 2500);
