// The lab's configurable service, Node flavour: HTTP routes made of steps (calls to other
// services, Redis commands, queue pushes, CPU work), queue consumers and the fault switch.
// No database driver (node has none built in): SQL steps belong to Python and Go services.
// Config: JSON file at $LAB_CONFIG (lab/topologies/mesh.py). Stdlib only.
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');

const cfg = JSON.parse(fs.readFileSync(process.env.LAB_CONFIG, 'utf8'));
// One connection per call: on long-lived kept-alive connections from node the capture
// pairs requests with later answers (reported; see lab/README.md).
const agent = new http.Agent({ keepAlive: false, maxSockets: 64 });
let fault = {};
setInterval(() => {
  fs.readFile(path.join(cfg.control, cfg.name), 'utf8', (err, data) => {
    try { fault = !err && data.trim() ? JSON.parse(data) : {}; } catch (e) { fault = {}; }
  });
}, 250);

function faultFor(route) {
  const f = fault;
  if (f && (f.route === route || f.route === '*') && Math.random() < (f.p === undefined ? 1 : f.p)) return f;
  return {};
}

class StepError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

// ---- Redis: one pipelined connection, replies matched to commands in order ----
class Redis {
  constructor(addr) {
    const [host, port] = addr.split(':');
    this.pending = [];
    this.buf = Buffer.alloc(0);
    this.sock = net.connect(Number(port), host);
    this.sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.drain(); });
    this.sock.on('error', (e) => { for (const p of this.pending.splice(0)) p.reject(e); });
  }
  cmd(args) {
    return new Promise((resolve, reject) => {
      let out = `*${args.length}\r\n`;
      for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
      this.pending.push({ resolve, reject });
      this.sock.write(out);
    });
  }
  parse(i) { // -> [value, next index] or null when incomplete
    const end = this.buf.indexOf('\r\n', i);
    if (end < 0) return null;
    const t = String.fromCharCode(this.buf[i]);
    const line = this.buf.toString('utf8', i + 1, end);
    if (t === '+' || t === ':') return [line, end + 2];
    if (t === '-') return [new Error(line), end + 2];
    if (t === '$') {
      const n = Number(line);
      if (n < 0) return [null, end + 2];
      if (this.buf.length < end + 2 + n + 2) return null;
      return [this.buf.toString('utf8', end + 2, end + 2 + n), end + 4 + n];
    }
    if (t === '*') {
      let j = end + 2, last = null;
      for (let k = 0; k < Number(line); k++) {
        const r = this.parse(j);
        if (!r) return null;
        [last, j] = r;
      }
      return [last, j];
    }
    return [new Error('bad reply'), end + 2];
  }
  drain() {
    for (;;) {
      const r = this.parse(0);
      if (!r) return;
      this.buf = this.buf.subarray(r[1]);
      const p = this.pending.shift();
      if (p) (r[0] instanceof Error ? p.reject(r[0]) : p.resolve(r[0]));
    }
  }
}
const redis = cfg.redis ? new Redis(cfg.redis) : null;

function once(step) {
  const [method, p] = step.route.split(' ');
  const [host, port] = cfg.peers[step.call].split(':');
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: Number(port), method, path: p, agent,
      headers: method === 'POST' ? { 'Content-Type': 'application/json', 'Content-Length': 2 } : {},
      timeout: (step.timeout || 2) * 1000 }, (res) => {
      let data = '';
      res.on('data', (c) => { data += c; });
      res.on('end', () => resolve([res.statusCode, data]));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (method === 'POST') req.write('{}');
    req.end();
    void host;
  });
}

async function call(step) {
  let last = '';
  for (let i = 0; i <= (step.retries || 0); i++) {
    let status, data;
    try { [status, data] = await once(step); } catch (e) { last = `${step.call}: ${e.message}`; continue; }
    if (status >= 500) { last = `${step.call} answered ${status}`; continue; }
    let value = null;
    try { value = JSON.parse(data).value; } catch (e) { value = null; }
    if (typeof value !== 'number') throw new StepError(500, `bad value from ${step.call}: ${value}`);
    return value;
  }
  throw new StepError(502, last);
}

function work(ms) {
  const end = process.hrtime.bigint() + BigInt(Math.round(ms * 1e6));
  let x = 0;
  while (process.hrtime.bigint() < end) for (let i = 0; i < 2000; i++) x += i * i;
  return x;
}

const rnd = (s) => s.replace('$R', String(1 + Math.floor(Math.random() * 500)));

async function runSteps(steps) {
  let total = 0;
  for (const st of steps) {
    if (st.call) total += await call(st);
    else if (st.par) total += (await Promise.all(st.par.map(call))).reduce((a, b) => a + b, 0);
    else if (st.redis) {
      try { await redis.cmd(st.redis.map(rnd)); } catch (e) { throw new StepError(500, `redis: ${e.message}`); }
      total += 1;
    } else if (st.push) await redis.cmd(['LPUSH', st.push, JSON.stringify({ from: cfg.name })]);
    else if (st.work) work(st.work);
    else if (st.sleep) await new Promise((r) => setTimeout(r, st.sleep * (0.7 + 0.6 * Math.random())));
  }
  return total;
}

function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}

async function handle(req, res) {
  if (req.url === '/healthz') return send(res, 200, { ok: true, value: 1 });
  const route = `${req.method} ${req.url.split('?')[0]}`;
  const steps = cfg.routes[route];
  if (!steps) return send(res, 404, { ok: false, error: 'no such route' });
  const f = faultFor(route);
  if (f.mode === 'slow') await new Promise((r) => setTimeout(r, f.ms || 500));
  if (f.mode === 'error') return send(res, 500, { ok: false, error: `TypeError in ${route}` });
  try {
    const v = await runSteps(steps);
    send(res, 200, { ok: true, value: f.mode === 'wrong' ? null : v });
  } catch (e) {
    send(res, e.status || 500, { ok: false, error: e.message });
  }
}

async function consume(queue, steps) {
  const r = new Redis(cfg.redis);
  for (;;) {
    const item = await r.cmd(['BRPOP', queue, '1']);
    if (item) {
      try { await runSteps(steps); } catch (e) { console.log(`${cfg.name}: job failed: ${e.message}`); }
    }
  }
}

for (const [q, steps] of Object.entries(cfg.consume || {})) consume(q, steps);
if (cfg.port) {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => { handle(req, res).catch((e) => send(res, 500, { ok: false, error: e.message })); });
  });
  // callers keep connections open between calls; node's 5 s idle close races their reuse
  server.keepAliveTimeout = 120000;
  server.headersTimeout = 121000;
  server.listen(cfg.port, '127.0.0.1', () => console.log(`${cfg.name} listening on ${cfg.port}`));
} else {
  console.log(`${cfg.name} consuming`);
}
