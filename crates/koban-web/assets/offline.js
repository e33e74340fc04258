// Offline payments in the browser: the same byte forms, checks and signatures as the Rust
// crate koban-offline (its wire.rs, sign.rs, purse.rs and terminal.rs are the reference), with
// WebCrypto (ECDSA P-256, SHA-256, r || s signatures) and no other library. An ES module: the
// wallet and terminal pages import it, and a test runs it under node against the crate.
//
// Amounts are JavaScript numbers and must stay below 2^53 (a purse holds at most the
// configured cap, far below); a code naming a larger amount is refused as malformed.

const KIND_PURSE = 1;
const KIND_TERMINAL = 2;
const KIND_CHALLENGE = 3;
const KIND_VOUCHER = 4;
const enc = new TextEncoder();
const DOMAIN = {
  purse: enc.encode('koban offline purse certificate v1\0'),
  terminal: enc.encode('koban offline terminal certificate v1\0'),
  challenge: enc.encode('koban offline challenge v1\0'),
  voucher: enc.encode('koban offline voucher v1\0'),
};
export const CHALLENGE_PREFIX = 'KOC1:';
export const VOUCHER_PREFIX = 'KOV1:';
export const NAME_MAX = 48;
export const CHALLENGE_MAX_AGE = 600;
const PURSE_LEN = 170;

export class Refusal extends Error {
  constructor(code) {
    super(code);
    this.code = code;
  }
}
const malformed = () => new Refusal('malformed');

// ---------------------------------------------------------------- base45 (RFC 9285)

const B45 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:';

export function base45Encode(bytes) {
  let out = '';
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    let n = bytes[i] * 256 + bytes[i + 1];
    out += B45[n % 45] + B45[Math.floor(n / 45) % 45] + B45[Math.floor(n / 2025)];
  }
  if (bytes.length % 2) {
    const n = bytes[bytes.length - 1];
    out += B45[n % 45] + B45[Math.floor(n / 45)];
  }
  return out;
}

export function base45Decode(text) {
  const values = [];
  for (const c of text) {
    const v = B45.indexOf(c);
    if (v < 0) throw malformed();
    values.push(v);
  }
  if (values.length % 3 === 1) throw malformed();
  const out = [];
  for (let i = 0; i < values.length; i += 3) {
    if (i + 2 < values.length) {
      const n = values[i] + values[i + 1] * 45 + values[i + 2] * 2025;
      if (n > 0xffff) throw malformed();
      out.push(n >> 8, n & 0xff);
    } else {
      const n = values[i] + values[i + 1] * 45;
      if (n > 0xff) throw malformed();
      out.push(n);
    }
  }
  return new Uint8Array(out);
}

// ---------------------------------------------------------------- byte forms

class Writer {
  constructor() { this.parts = []; }
  u8(v) { this.parts.push(Uint8Array.of(v)); }
  bytes(b) { this.parts.push(Uint8Array.from(b)); }
  u32(v) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v);
    this.parts.push(b);
  }
  u64(v) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v));
    this.parts.push(b);
  }
  done() {
    const n = this.parts.reduce((s, p) => s + p.length, 0);
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of this.parts) { out.set(p, at); at += p.length; }
    return out;
  }
}

class Reader {
  constructor(bytes) { this.b = bytes; this.at = 0; }
  take(n) {
    if (this.at + n > this.b.length) throw malformed();
    const out = this.b.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
  u8() { return this.take(1)[0]; }
  u32() { return new DataView(this.take(4).buffer).getUint32(0); }
  u64() { return new DataView(this.take(8).buffer).getBigUint64(0); }
  kind(k) { if (this.u8() !== k) throw malformed(); }
  currency() {
    const c = this.take(3);
    if (!c.every((b) => b >= 65 && b <= 90)) throw malformed();
    return String.fromCharCode(...c);
  }
  key() {
    const k = this.take(65);
    if (k[0] !== 4) throw malformed();
    return k;
  }
  amount() {
    const v = this.u64();
    if (v === 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed();
    return Number(v);
  }
  end() { if (this.at !== this.b.length) throw malformed(); }
}

function validName(name) {
  if (!name || enc.encode(name).length > NAME_MAX || name.trim() !== name) return false;
  // No control characters, zero-width marks, direction overrides or the byte-order mark.
  return !/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/.test(name);
}

function purseBody(c) {
  const w = new Writer();
  w.u8(KIND_PURSE); w.u8(c.issuerKey); w.bytes(c.purse); w.bytes(c.deviceKey);
  w.bytes(enc.encode(c.currency)); w.u64(c.limit); w.u32(c.notBefore); w.u32(c.notAfter);
  w.u32(c.serial);
  return w.done();
}

function readPurse(r) {
  r.kind(KIND_PURSE);
  const c = {
    issuerKey: r.u8(), purse: r.take(16), deviceKey: r.key(), currency: r.currency(),
    limit: r.amount(), notBefore: r.u32(), notAfter: r.u32(), serial: r.u32(),
    signature: r.take(64),
  };
  if (c.notBefore >= c.notAfter) throw malformed();
  return c;
}

function terminalBody(c) {
  const name = enc.encode(c.name);
  const w = new Writer();
  w.u8(KIND_TERMINAL); w.u8(c.issuerKey); w.bytes(c.terminal); w.bytes(c.merchant);
  w.bytes(c.terminalKey); w.bytes(enc.encode(c.currency)); w.u32(c.notAfter);
  w.u8(name.length); w.bytes(name);
  return w.done();
}

function readTerminal(r) {
  r.kind(KIND_TERMINAL);
  const c = {
    issuerKey: r.u8(), terminal: r.take(16), merchant: r.take(16), terminalKey: r.key(),
    currency: r.currency(), notAfter: r.u32(),
  };
  const len = r.u8();
  let name;
  try {
    name = new TextDecoder('utf-8', { fatal: true }).decode(r.take(len));
  } catch (e) {
    throw malformed();
  }
  if (!validName(name)) throw malformed();
  c.name = name;
  c.signature = r.take(64);
  return c;
}

const withSignature = (body, sig) => { const w = new Writer(); w.bytes(body); w.bytes(sig); return w.done(); };
export const encodePurse = (c) => withSignature(purseBody(c), c.signature);
export const encodeTerminal = (c) => withSignature(terminalBody(c), c.signature);

export function decodePurse(bytes) {
  const r = new Reader(bytes);
  const c = readPurse(r);
  r.end();
  return c;
}

export function decodeTerminal(bytes) {
  const r = new Reader(bytes);
  const c = readTerminal(r);
  r.end();
  return c;
}

function challengeBody(ch) {
  const w = new Writer();
  w.u8(KIND_CHALLENGE); w.bytes(encodeTerminal(ch.terminal)); w.u64(ch.amount);
  w.bytes(ch.nonce); w.u32(ch.time);
  return w.done();
}

export const encodeChallenge = (ch) => withSignature(challengeBody(ch), ch.signature);

export function decodeChallenge(bytes) {
  const r = new Reader(bytes);
  r.kind(KIND_CHALLENGE);
  const ch = { terminal: readTerminal(r), amount: r.amount(), nonce: r.take(12), time: r.u32(), signature: r.take(64) };
  r.end();
  return ch;
}

function voucherBody(v) {
  const c = v.content;
  const w = new Writer();
  w.u8(KIND_VOUCHER); w.bytes(encodePurse(v.certificate)); w.bytes(c.terminal); w.bytes(c.nonce);
  w.u32(c.time); w.u64(c.amount); w.u32(c.counter); w.u64(c.cumulative);
  return w.done();
}

export const encodeVoucher = (v) => withSignature(voucherBody(v), v.signature);

export function decodeVoucher(bytes) {
  const r = new Reader(bytes);
  r.kind(KIND_VOUCHER);
  const certificate = readPurse(r);
  const content = {
    terminal: r.take(16), nonce: r.take(12), time: r.u32(), amount: r.amount(),
    counter: r.u32(), cumulative: r.amount(),
  };
  if (content.counter === 0 || content.cumulative < content.amount) throw malformed();
  const v = { certificate, content, signature: r.take(64) };
  r.end();
  return v;
}

function fromText(text, prefix) {
  const body = text.trim();
  if (!body.startsWith(prefix)) throw malformed();
  const bytes = base45Decode(body.slice(prefix.length));
  if (base45Encode(bytes) !== body.slice(prefix.length)) throw malformed();
  return bytes;
}

export const challengeToText = (ch) => CHALLENGE_PREFIX + base45Encode(encodeChallenge(ch));
export const voucherToText = (v) => VOUCHER_PREFIX + base45Encode(encodeVoucher(v));
export const challengeFromText = (t) => decodeChallenge(fromText(t, CHALLENGE_PREFIX));
export const voucherFromText = (t) => decodeVoucher(fromText(t, VOUCHER_PREFIX));

// ---------------------------------------------------------------- signatures

const ALG = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGN = { name: 'ECDSA', hash: 'SHA-256' };
const concat = (a, b) => { const out = new Uint8Array(a.length + b.length); out.set(a); out.set(b, a.length); return out; };

/// A new key pair whose private half can never be exported (kept in IndexedDB as it is).
export async function generateKey() {
  return crypto.subtle.generateKey(ALG, false, ['sign', 'verify']);
}

export async function publicKeyBytes(key) {
  return new Uint8Array(await crypto.subtle.exportKey('raw', key.publicKey ?? key));
}

export async function sign(privateKey, domain, body) {
  return new Uint8Array(await crypto.subtle.sign(SIGN, privateKey, concat(domain, body)));
}

export async function verify(rawKey, domain, body, signature) {
  try {
    const key = await crypto.subtle.importKey('raw', rawKey, ALG, false, ['verify']);
    return await crypto.subtle.verify(SIGN, key, signature, concat(domain, body));
  } catch (e) {
    return false;
  }
}

/// issuers: Map from key number to the issuer's raw public key.
async function verifyPurseSignature(c, issuers) {
  const key = issuers.get(c.issuerKey);
  if (!key) throw new Refusal('unknown_issuer');
  if (!(await verify(key, DOMAIN.purse, purseBody(c), c.signature))) throw new Refusal('bad_issuer_signature');
}

function checkTime(c, now) {
  if (now < c.notBefore) throw new Refusal('not_yet_valid');
  if (now >= c.notAfter) throw new Refusal('expired');
}

export async function verifyChallenge(ch, issuers, now) {
  const t = ch.terminal;
  const key = issuers.get(t.issuerKey);
  if (!key) throw new Refusal('unknown_issuer');
  if (!(await verify(key, DOMAIN.terminal, terminalBody(t), t.signature))) throw new Refusal('bad_issuer_signature');
  if (now >= t.notAfter) throw new Refusal('expired');
  if (!(await verify(t.terminalKey, DOMAIN.challenge, challengeBody(ch), ch.signature))) throw new Refusal('bad_terminal_signature');
}

export async function verifyVoucher(v, issuers) {
  await verifyPurseSignature(v.certificate, issuers);
  if (!(await verify(v.certificate.deviceKey, DOMAIN.voucher, voucherBody(v), v.signature))) throw new Refusal('bad_device_signature');
}

/// The issuer's signature on a certificate (the server issues them; tests use this).
export async function issuePurse(c, issuerKey) {
  return { ...c, signature: await sign(issuerKey, DOMAIN.purse, purseBody(c)) };
}

export async function issueTerminal(c, issuerKey) {
  return { ...c, signature: await sign(issuerKey, DOMAIN.terminal, terminalBody(c)) };
}

/// A terminal signs a challenge.
export async function makeChallenge(terminal, privateKey, amount, nonce, time) {
  const ch = { terminal, amount, nonce, time, signature: new Uint8Array(64) };
  ch.signature = await sign(privateKey, DOMAIN.challenge, challengeBody(ch));
  return ch;
}

const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/// The device pays a challenge its customer confirmed. `state` is {counter, spent, last}
/// (last: the last voucher signed); it is updated and must be saved before the voucher is
/// shown. The same challenge again gets the same voucher.
export async function pay(purse, privateKey, state, ch, issuers, now) {
  const last = state.last;
  if (last && same(last.content.terminal, ch.terminal.terminal) && same(last.content.nonce, ch.nonce)
      && last.content.amount === ch.amount && last.content.time === ch.time) {
    return last;
  }
  await verifyChallenge(ch, issuers, now);
  await verifyPurseSignature(purse, issuers);
  checkTime(purse, now);
  if (ch.terminal.currency !== purse.currency) throw new Refusal('wrong_currency');
  const cumulative = state.spent + ch.amount;
  if (cumulative > purse.limit) throw new Refusal('insufficient');
  const v = {
    certificate: purse,
    content: { terminal: ch.terminal.terminal, nonce: ch.nonce, time: ch.time, amount: ch.amount, counter: state.counter + 1, cumulative },
    signature: new Uint8Array(64),
  };
  v.signature = await sign(privateKey, DOMAIN.voucher, voucherBody(v));
  state.counter += 1;
  state.spent = cumulative;
  state.last = v;
  return v;
}

const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/// The terminal's checks of a voucher answering `ch` (Terminal::accept in the crate).
/// `terminal` is {certificate, issuers, revoked: Set of purse hex, listTime, maxListAge,
/// seen: Map purse hex -> {counter, cumulative}, answered: Set of nonce hex}. On success the
/// terminal's state is updated; the caller stores the voucher.
export async function accept(terminal, ch, v, now) {
  if (now < terminal.listTime || now - terminal.listTime > terminal.maxListAge) throw new Refusal('stale_revocation_list');
  const cert = v.certificate;
  const c = v.content;
  const mine = terminal.certificate.terminal;
  if (!same(c.terminal, mine)) throw new Refusal('wrong_terminal');
  if (!same(c.nonce, ch.nonce) || c.amount !== ch.amount || c.time !== ch.time || !same(ch.terminal.terminal, mine)
      || terminal.answered.has(hex(ch.nonce)) || ch.time > now || now - ch.time > CHALLENGE_MAX_AGE) {
    throw new Refusal('wrong_challenge');
  }
  if (cert.currency !== terminal.certificate.currency) throw new Refusal('wrong_currency');
  await verifyVoucher(v, terminal.issuers);
  checkTime(cert, now);
  checkTime(cert, ch.time);
  const purse = hex(cert.purse);
  if (terminal.revoked.has(purse)) throw new Refusal('revoked');
  if (c.cumulative > cert.limit) throw new Refusal('over_limit');
  const seen = terminal.seen.get(purse);
  if (seen) {
    if (c.counter <= seen.counter) throw new Refusal('counter_not_increasing');
    if (c.cumulative < seen.cumulative + c.amount) throw new Refusal('cumulative_inconsistent');
  }
  terminal.seen.set(purse, { counter: c.counter, cumulative: c.cumulative });
  terminal.answered.add(hex(ch.nonce));
}
