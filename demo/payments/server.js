// Payments service (Node, HTTPS): approves charges. Fault mode "error" (read from
// $SHOP_CONTROL/payments) makes it answer 503, as when its card processor is down.
'use strict';
const fs = require('fs');
const https = require('https');
const path = require('path');
const crypto = require('crypto');

process.title = 'payments';
const controlFile = path.join(process.env.SHOP_CONTROL || '/nonexistent', 'payments');
let mode = '';
setInterval(() => {
  fs.readFile(controlFile, 'utf8', (err, data) => { mode = err ? '' : data.trim(); });
}, 250).unref();

function send(res, code, body) {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function charge(req, res) {
  let raw = '';
  req.on('data', (chunk) => { raw += chunk; });
  req.on('end', () => {
    let order;
    try { order = JSON.parse(raw); } catch (e) { return send(res, 400, { error: 'bad json' }); }
    if (mode === 'error') return send(res, 503, { error: 'card processor unavailable' });
    // A card network round trip takes a few milliseconds.
    setTimeout(() => send(res, 200, {
      id: 'pay_' + crypto.randomBytes(6).toString('hex'),
      order_id: order.order_id, amount_cents: order.amount_cents, status: 'approved',
    }), 3 + Math.random() * 7);
  });
}

const server = https.createServer({
  key: fs.readFileSync(process.env.SHOP_KEY), cert: fs.readFileSync(process.env.SHOP_CERT),
}, (req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') return send(res, 200, { ok: true });
  if (req.method === 'POST' && req.url === '/charge') return charge(req, res);
  send(res, 404, { error: 'not found' });
});
server.listen(Number(process.env.SHOP_PORT), '127.0.0.1', () => {
  console.log(`payments listening on 127.0.0.1:${process.env.SHOP_PORT}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
