// Everything the browser checks and opens itself: the doorbell's Ed25519 signature on each
// manifest (WebCrypto), the ciphertext's SHA-256 against it, the chain links, then age
// decryption (the vendored age-encryption package) with this browser's non-extractable
// X25519 key. Also signing commands, and the header re-wrap that shares one clip.
import { Decrypter, identityToRecipient } from "age-encryption";
import { X25519Recipient } from "/static/vendor/age-encryption/dist/recipients.js";
import { encodeHeader, encodeHeaderNoMAC } from "/static/vendor/age-encryption/dist/format.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bech32 } from "@scure/base";
import * as db from "/static/js/db.js";

const enc = new TextEncoder(), dec = new TextDecoder();
const MANIFEST_CONTEXT = enc.encode("doorstep/manifest/v1\n");
export const SESSION_CONTEXT = "doorstep/hub-session/v1\n";
const PKCS8_X25519 = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03,
  0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]);

export class Tampered extends Error {}

export const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
export const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

// -- keys -------------------------------------------------------------------------------------
export async function makeKeys() {
  const age = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  const sign = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const recipient = await identityToRecipient(age.privateKey);
  const raw = await crypto.subtle.exportKey("raw", sign.publicKey);    // public half only
  return { age, sign, recipient, key: "ed25519:" + b64(raw) };
}

// An AGE-SECRET-KEY-1... (the owner's owner.key) as a non-extractable CryptoKey.
export async function importIdentity(text) {
  const line = text.split("\n").map((l) => l.trim()).find((l) => l.startsWith("AGE-SECRET-KEY-1"));
  if (!line) throw new Error("no AGE-SECRET-KEY-1... line in that text");
  const { prefix, bytes } = bech32.decodeToBytes(line.toLowerCase());
  if (prefix !== "age-secret-key-" || bytes.length !== 32) throw new Error("not an age X25519 identity");
  const key = await crypto.subtle.importKey("pkcs8", concat(PKCS8_X25519, bytes), { name: "X25519" },
    false, ["deriveBits"]);
  return { key, recipient: await identityToRecipient(key) };
}

async function identities() {
  const me = await db.get("me");
  const extra = (await db.get("identities")) || [];
  return [me.age.privateKey, ...extra.map((i) => i.key)];
}

export async function devicePublic(device) {
  const me = await db.get("me");
  const text = me && me.devices && me.devices[device];
  if (!text) throw new Tampered(`no pinned key for doorbell ${device}`);
  return crypto.subtle.importKey("raw", unb64(text.slice("ed25519:".length)), { name: "Ed25519" },
    false, ["verify"]);
}

// -- canonical JSON, as Python's json.dumps(sort_keys, (",", ":"), ensure_ascii=False) -------
export function canonical(value, floats = new Set()) {
  const walk = (v, key) => {
    if (v === null || typeof v === "boolean" || typeof v === "string") return JSON.stringify(v);
    if (typeof v === "number") {
      const s = JSON.stringify(v);
      return floats.has(key) && Number.isInteger(v) ? s + ".0" : s;
    }
    if (Array.isArray(v)) return "[" + v.map((x) => walk(x, "")).join(",") + "]";
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + walk(v[k], k)).join(",") + "}";
  };
  return walk(value, "");
}

// The signed bytes of {"<field>":{...},"sig":"..."}: the object's bytes exactly as sent when
// the sender wrote the canonical form, else the canonical form rebuilt.
export function signedPart(text, field, floats) {
  const head = `{"${field}":`, tail = /,"sig":"([A-Za-z0-9+/=]{86,88})"}\s*$/;
  const m = text.match(tail);
  const doc = JSON.parse(text);
  if (text.startsWith(head) && m) return { bytes: enc.encode(text.slice(head.length, m.index)), doc };
  return { bytes: enc.encode(canonical(doc[field], floats)), doc };
}

// -- manifests and artifacts --------------------------------------------------------------------
export async function verifyEnvelope(device, envBytes) {
  const text = dec.decode(envBytes);
  let part;
  try { part = signedPart(text, "manifest", new Set(["created"])); }
  catch { throw new Tampered("the signed manifest is not readable"); }
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, await devicePublic(device),
    unb64(part.doc.sig), concat(MANIFEST_CONTEXT, part.bytes));
  if (!ok) throw new Tampered(`the manifest is not signed by ${device}'s key`);
  const manifest = JSON.parse(dec.decode(part.bytes));
  if (manifest.device !== device) throw new Tampered("the manifest names another doorbell");
  manifest.hash = hex(await crypto.subtle.digest("SHA-256", part.bytes));
  return manifest;
}

export async function checkCiphertext(manifest, ciphertext) {
  const digest = hex(await crypto.subtle.digest("SHA-256", ciphertext));
  if (ciphertext.length !== manifest.size || digest !== manifest.sha256) {
    throw new Tampered("the ciphertext does not match the doorbell's signed manifest");
  }
}

export async function decrypt(ciphertext) {
  const d = new Decrypter();
  for (const id of await identities()) d.addIdentity(id);
  return d.decrypt(ciphertext);
}

// Verify and open one stored artifact, from bytes fetched from the hub (or a push message).
export async function open(device, envBytes, ciphertext) {
  const manifest = await verifyEnvelope(device, envBytes);
  await checkCiphertext(manifest, ciphertext);
  let plain, cutShort = false;
  try {
    if (manifest.kind === "clip_partial") ({ plain, cutShort } = await decryptCutShort(ciphertext));
    else plain = await decrypt(ciphertext);
  } catch (e) { throw new Error(`cannot decrypt ${device} ${manifest.seq}: ${e.message}`); }
  return { manifest, plain, cutShort };
}

// The length of an age file's header, up to and including its MAC line.
export function headerLength(ciphertext) {
  const text = dec.decode(ciphertext.subarray(0, Math.min(ciphertext.length, 65536)));
  const mac = text.indexOf("\n--- ");
  if (!text.startsWith("age-encryption.org/v1\n") || mac < 0) throw new Error("not an age file");
  return enc.encode(text.slice(0, text.indexOf("\n", mac + 1) + 1)).length;
}

async function fileKeyOf(ciphertext, length) {
  const d = new Decrypter();
  for (const id of await identities()) d.addIdentity(id);
  return d.decryptHeader(ciphertext.subarray(0, length));
}

// A clip the doorbell signed as cut short by a crash (clip_partial): its age STREAM lacks the
// final chunk, which age (and the age-encryption package) rightly refuses. Every chunk that
// is there must still authenticate; only the missing end is excused, as `doorstep open` does.
const CHUNK = 64 * 1024, TAG = 16;
export async function decryptCutShort(ciphertext) {
  const length = headerLength(ciphertext);
  const fileKey = await fileKeyOf(ciphertext, length);
  const nonce = ciphertext.subarray(length, length + 16);
  const key = hkdf(sha256, fileKey, nonce, enc.encode("payload"), 32);
  fileKey.fill(0);
  const body = ciphertext.subarray(length + 16), parts = [];
  let at = 0, counter = 0, ended = false;
  while (at < body.length && !ended) {
    const chunk = body.subarray(at, at + CHUNK + TAG);
    const streamNonce = (last) => {
      const n = new Uint8Array(12);
      new DataView(n.buffer).setUint32(7, counter);
      n[11] = last;
      return n;
    };
    try { parts.push(chacha20poly1305(key, streamNonce(0)).decrypt(chunk)); }
    catch {
      try { parts.push(chacha20poly1305(key, streamNonce(1)).decrypt(chunk)); ended = true; }
      catch { throw new Tampered(`chunk ${counter} of the clip does not authenticate`); }
    }
    at += chunk.length;
    counter += 1;
  }
  key.fill(0);
  return { plain: concat(...parts), cutShort: !ended };
}

export async function fetchBytes(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

export async function fetchOpen(device, seq) {
  const base = `/api/a/${encodeURIComponent(device)}/${seq}`;
  const [env, ct] = await Promise.all([fetchBytes(base + ".env"), fetchBytes(base + ".age")]);
  return open(device, env, ct);
}

// -- commands and answers ---------------------------------------------------------------------
export async function signCommand(device, action, params = null) {
  const me = await db.get("me");
  const last = (await db.get("counter")) || 0;
  const counter = Math.max(Date.now(), last + 1);
  await db.put("counter", counter);
  const body = { action, counter, device, issued: Date.now() / 1000, v: 1 };
  if (params && Object.keys(params).length) body.params = params;   // text values only (a live session, an offer)
  const sig = await crypto.subtle.sign({ name: "Ed25519" }, me.sign.privateKey, enc.encode(canonical(body)));
  return { counter, payload: JSON.stringify({ body, sig: b64(sig) }) };
}

export async function verifyAck(device, text, counter) {
  const part = signedPart(text, "body", new Set(["time"]));
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, await devicePublic(device),
    unb64(part.doc.sig), part.bytes);
  const body = JSON.parse(dec.decode(part.bytes));
  if (!ok || body.device !== device || body.counter !== counter || body.type !== "ack") {
    throw new Tampered("the answer is not the doorbell's signed answer to this command");
  }
  return body;
}

export async function signSession(nonce) {
  const me = await db.get("me");
  return b64(await crypto.subtle.sign({ name: "Ed25519" }, me.sign.privateKey, enc.encode(SESSION_CONTEXT + nonce)));
}

// -- sharing: a new header for one recipient over the same payload -------------------------------
export async function rewrap(ciphertext, recipient) {
  const length = headerLength(ciphertext);
  const fileKey = await fileKeyOf(ciphertext, length);
  const stanzas = await new X25519Recipient(recipient).wrapFileKey(fileKey);
  const macKey = hkdf(sha256, fileKey, undefined, enc.encode("header"), 32);
  const header = encodeHeader(stanzas, hmac(sha256, macKey, encodeHeaderNoMAC(stanzas)));
  fileKey.fill(0);
  return concat(header, ciphertext.subarray(length));
}
