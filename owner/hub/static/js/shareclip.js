// Sharing a clip stored as segments (issue 15; docs/design.md, "Sharing a clip of segments"):
// every segment, and the clip event, re-wrapped here for the one recipient, in one tar with
// share.json, which holds each file's proof (the doorbell's signed manifest and the header it
// signed). The same bundle `doorstep share` writes (owner/shareclip.py), checked by the hub and
// by the recipient's `doorstep verify-share`.
import * as seal from "/static/js/seal.js";

const enc = new TextEncoder(), dec = new TextDecoder();

// An uncompressed ustar archive of [name, bytes] pairs (names under 100 bytes).
export function tar(files) {
  const blocks = [];
  const field = (block, at, len, text) => block.set(enc.encode(text).subarray(0, len), at);
  const octal = (n, len) => n.toString(8).padStart(len - 1, "0") + "\0";
  for (const [name, data] of files) {
    const head = new Uint8Array(512);
    field(head, 0, 100, name);
    field(head, 100, 8, octal(0o600, 8));
    field(head, 108, 8, octal(0, 8));
    field(head, 116, 8, octal(0, 8));
    field(head, 124, 12, octal(data.length, 12));
    field(head, 136, 12, octal(Math.floor(Date.now() / 1000), 12));
    field(head, 148, 8, "        ");
    field(head, 156, 1, "0");
    field(head, 257, 8, "ustar\u000000");
    const sum = head.reduce((a, b) => a + b, 0);
    field(head, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
    blocks.push(head, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of blocks) { out.set(b, at); at += b.length; }
  return out;
}

const nameOf = (seq, kind) => `${String(seq).padStart(10, "0")}.${kind}.age`;

// The bundle of a clip: its segments' seqs, in order, and its clip event's seq (or null).
export async function bundle(device, first, seqs, eventSeq, recipient) {
  const wanted = [...seqs.map((s) => [s, "segment"]), ...(eventSeq ? [[eventSeq, "event"]] : [])];
  const files = await Promise.all(wanted.map(async ([seq, kind]) => {
    const base = `/api/a/${encodeURIComponent(device)}/${seq}`;
    const [env, ct] = await Promise.all([seal.fetchBytes(base + ".env"), seal.fetchBytes(base + ".age")]);
    const manifest = await seal.verifyEnvelope(device, env);    // never re-wrap what does not verify
    await seal.checkCiphertext(manifest, ct);
    const copy = await seal.rewrap(ct, recipient);
    const header = ct.subarray(0, seal.headerLength(ct));
    return { file: nameOf(seq, kind), copy, manifest: dec.decode(env), original_header: seal.b64(header).replace(/=+$/, "") };   // age's unpadded base64
  }));
  const index = { v: 1, kind: "clip", device, first,
    files: files.map(({ file, manifest, original_header }) => ({ file, manifest, original_header })) };
  return tar([["share.json", enc.encode(JSON.stringify(index))], ...files.map((f) => [f.file, f.copy])]);
}
