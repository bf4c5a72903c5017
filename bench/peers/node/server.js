// Node.js `ws` echo server: one process, no optional native add-ons (bufferutil / utf-8-validate).
// node server.js --port P [--host H] [--backlog N] [--compression] [--certfile F --keyfile K]
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const opts = { host: '127.0.0.1', port: 0, backlog: 6000, compression: false, certfile: '', keyfile: '' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const key = argv[i].replace(/^--/, '');
  if (key === 'compression') opts.compression = true;
  else opts[key] = argv[++i];
}

const server = opts.certfile
  ? https.createServer({ cert: fs.readFileSync(opts.certfile), key: fs.readFileSync(opts.keyfile) })
  : http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: opts.compression, maxPayload: 16 * 1024 * 1024 });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
server.listen({ host: opts.host, port: Number(opts.port), backlog: Number(opts.backlog) }, () => {
  console.log('ready');
});
process.on('SIGTERM', () => process.exit(0));
