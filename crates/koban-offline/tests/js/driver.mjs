// Runs the browser's offline module (crates/koban-web/assets/offline.js) under node against
// what the Rust crate made, and makes the same forms for the crate to check. Reads one JSON
// object on stdin, writes one on stdout; any failure exits non-zero with the reason.
import * as off from '../../../koban-web/assets/offline.js';

const input = JSON.parse(await new Promise((resolve) => {
  let data = '';
  process.stdin.on('data', (c) => { data += c; });
  process.stdin.on('end', () => resolve(data));
}));
const b64 = (s) => Uint8Array.from(Buffer.from(s, 'base64'));
const out = { checks: [] };
const check = (what, ok) => { if (!ok) throw new Error(`failed: ${what}`); out.checks.push(what); };

const issuerPublic = b64(input.issuer_public);
const issuers = new Map([[input.issuer_number, issuerPublic]]);
const now = input.now;

// What Rust made reads, verifies and encodes back to the same text.
const ch = off.challengeFromText(input.challenge);
await off.verifyChallenge(ch, issuers, now);
check('rust challenge verifies', true);
check('rust challenge re-encodes', off.challengeToText(ch) === input.challenge);
check('the certified name reads', ch.terminal.name === input.name);
const v = off.voucherFromText(input.voucher);
await off.verifyVoucher(v, issuers);
check('rust voucher verifies', true);
check('rust voucher re-encodes', off.voucherToText(v) === input.voucher);
const terminal = {
  certificate: ch.terminal, issuers, revoked: new Set(), listTime: now, maxListAge: 86400,
  seen: new Map(), answered: new Set(),
};
await off.accept(terminal, ch, v, now);
check('the js terminal accepts the rust voucher', true);
try {
  await off.accept(terminal, ch, v, now);
  check('a challenge is answered once', false);
} catch (e) {
  check('a challenge is answered once', e.code === 'wrong_challenge');
}
// One changed byte of the voucher: refused.
const bytes = off.encodeVoucher(v);
bytes[bytes.length - 70] ^= 1;
let refused = false;
try { await off.verifyVoucher(off.decodeVoucher(bytes), issuers); } catch (e) { refused = true; }
check('a changed voucher is refused', refused);
check('base45 of every byte value round-trips', (() => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  return off.base45Decode(off.base45Encode(all)).every((b, i) => b === i);
})());

// The browser's own keys, certified with the issuer's key (the server does this in life).
const issuerKey = await crypto.subtle.importKey('pkcs8', b64(input.issuer_pkcs8), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
const device = await off.generateKey();
const till = await off.generateKey();
const purse = await off.issuePurse({
  issuerKey: input.issuer_number, purse: new Uint8Array(16).fill(9), deviceKey: await off.publicKeyBytes(device),
  currency: 'JPY', limit: 20000, notBefore: now - 60, notAfter: now + 3600, serial: 1,
}, issuerKey);
const tcert = await off.issueTerminal({
  issuerKey: input.issuer_number, terminal: new Uint8Array(16).fill(5), merchant: new Uint8Array(16).fill(6),
  terminalKey: await off.publicKeyBytes(till), currency: 'JPY', notAfter: now + 86400, name: 'ブラウザ Browser Shop',
}, issuerKey);
const jsChallenge = await off.makeChallenge(tcert, till.privateKey, 1500, new Uint8Array(12).fill(3), now);
const state = { counter: 0, spent: 0, last: null };
const jsVoucher = await off.pay(purse, device.privateKey, state, jsChallenge, issuers, now);
check('the same challenge gives the same voucher', (await off.pay(purse, device.privateKey, state, jsChallenge, issuers, now)) === jsVoucher);
check('the device counted once', state.counter === 1 && state.spent === 1500);
const tooMuch = await off.makeChallenge(tcert, till.privateKey, 18501, new Uint8Array(12).fill(4), now);
let insufficient = false;
try { await off.pay(purse, device.privateKey, state, tooMuch, issuers, now); } catch (e) { insufficient = e.code === 'insufficient'; }
check('more than the purse holds is refused and nothing counted', insufficient && state.counter === 1 && state.spent === 1500);
const revokedTill = {
  certificate: tcert, issuers, revoked: new Set([Buffer.from(purse.purse).toString('hex')]), listTime: now,
  maxListAge: 86400, seen: new Map(), answered: new Set(),
};
let revoked = false;
try { await off.accept(revokedTill, jsChallenge, jsVoucher, now); } catch (e) { revoked = e.code === 'revoked'; }
check('a revoked purse is refused', revoked);
out.challenge = off.challengeToText(jsChallenge);
out.voucher = off.voucherToText(jsVoucher);
process.stdout.write(JSON.stringify(out));
