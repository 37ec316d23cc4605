// An ESME written with the npm `smpp` package (not smsgw's code), driven by
// tests/receiver/test_esme_e2e.py: binds as transmitter, receiver and transceiver in turn,
// submits COUNT messages asking for receipts over the transceiver bind, waits for their
// receipts (and WAIT_MO MO messages), and prints what it saw as one JSON line.
'use strict';
const smpp = require('smpp');

const cfg = JSON.parse(process.argv[2]);
const out = { binds: {}, submitted: [], receipts: [], mo: [], errors: [] };

function connect() {
  return new Promise((resolve, reject) => {
    const s = smpp.connect({ url: `smpp://${cfg.host}:${cfg.port}`, auto_enquire_link_period: 10000 });
    s.on('connect', () => resolve(s));
    s.on('error', (e) => { out.errors.push(String(e)); reject(e); });
  });
}

function call(s, cmd, fields) {
  return new Promise((resolve) => s[cmd](fields, (pdu) => resolve(pdu)));
}

async function bindOnly(mode) {
  const s = await connect();
  const r = await call(s, `bind_${mode}`, { system_id: cfg.system_id, password: cfg.password });
  out.binds[mode] = r.command_status;
  await call(s, 'unbind', {});
  s.close();
}

async function main() {
  await bindOnly('transmitter');
  await bindOnly('receiver');
  const s = await connect();
  const r = await call(s, 'bind_transceiver', { system_id: cfg.system_id, password: cfg.password });
  out.binds.transceiver = r.command_status;
  const done = new Promise((resolve) => {
    const check = () => {
      if (out.receipts.length >= cfg.count && out.mo.length >= (cfg.wait_mo || 0)) resolve();
    };
    s.on('deliver_sm', (pdu) => {
      s.send(pdu.response());
      const text = pdu.short_message && pdu.short_message.message !== undefined
        ? String(pdu.short_message.message) : '';
      if (pdu.esm_class & 0x04) {
        out.receipts.push({ text, receipted_message_id: pdu.receipted_message_id,
                            message_state: pdu.message_state, source_addr: pdu.source_addr });
      } else {
        out.mo.push({ text, source_addr: pdu.source_addr, destination_addr: pdu.destination_addr });
      }
      check();
    });
    check();
  });
  for (let i = 0; i < cfg.count; i++) {
    const resp = await call(s, 'submit_sm', {
      source_addr: cfg.from, source_addr_ton: 5, destination_addr: cfg.to, dest_addr_ton: 1,
      dest_addr_npi: 1, short_message: `node ${i}`, registered_delivery: 1,
    });
    out.submitted.push({ status: resp.command_status, message_id: resp.message_id });
  }
  const timer = setTimeout(() => { out.errors.push('timeout'); finish(s); }, cfg.timeout_ms || 20000);
  await done;
  clearTimeout(timer);
  finish(s);
}

let finished = false;
function finish(s) {
  if (finished) return;
  finished = true;
  s.unbind(() => { s.close(); process.stdout.write(JSON.stringify(out) + '\n'); process.exit(0); });
  setTimeout(() => { process.stdout.write(JSON.stringify(out) + '\n'); process.exit(0); }, 2000);
}

main().catch((e) => { out.errors.push(String(e && e.stack || e)); process.stdout.write(JSON.stringify(out) + '\n'); process.exit(1); });
